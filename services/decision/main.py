"""Wiring of the decision service: what it needs and what it serves, the
models it loads (the promoted versions, training the default set first when
none is promoted; shadow versions beside them) and the feature-vector
consumer it runs (DecisionSettings, env TRADING_DECISION__*), and its market
memory on the vector store (runtime.vectors: pgvector, or Weaviate when
TRADING_VECTORS__WEAVIATE_URL is set)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from tenacity import AsyncRetrying, retry_if_not_exception_type, stop_after_delay, wait_exponential_jitter
from trading.decision.v1 import decision_service_pb2_grpc as pb_grpc
from trading.execution.v1 import execution_service_pb2_grpc as exec_grpc

from runtime.contracts import event_registry
from runtime.grpc_client import ClientFactory
from runtime.membership import ReplicaGroup
from runtime.messaging import RetryPolicy
from runtime.messaging.nats import NatsSubscriber
from runtime.outbox import OutboxRelay, PostgresOutbox
from runtime.resources import Resources
from runtime.security.delegations import DelegationCache
from runtime.service import ServiceSpec
from runtime.storage.migrations import MigrationError
from runtime.vectors import VectorStore, open_vector_store
from services.decision import models, train
from services.decision.adapters.postgres import PostgresSignalStore, PostgresStrategyStore
from services.decision.adapters.redis import RedisInstrumentDirectory
from services.decision.api import DecisionApi, strategy_updated_rows
from services.decision.domain import embedding
from services.decision.engine import (
    VECTOR_SUBJECT_PREFIX,
    DecisionEngine,
    IntentSweeper,
    SignalPruner,
    StrategyCache,
    vector_subject,
)
from services.decision.inference import Ensemble, ShadowScorer
from services.decision.memory import MarketMemory
from services.decision.settings import DecisionSettings, TrainingSettings
from services.features.domain import FeatureConfig

log = logging.getLogger(__name__)

DECISION_SERVICE = "trading.decision.v1.DecisionService"


async def load_models(
    settings: DecisionSettings, var_dir: Any, training: TrainingSettings | None = None
) -> tuple[dict[str, models.LoadedModel], dict[str, models.LoadedModel]]:
    """The promoted (live) versions and the shadow versions beside them, by model id."""
    model_dir = settings.resolved_model_dir(var_dir)
    promoted = await asyncio.to_thread(models.load_promoted, model_dir)
    if not promoted and settings.train_if_missing:
        # A fresh machine, or a directory of versions none of which passed the gate.
        log.info("decision: no promoted model under %s, training the default set", model_dir)
        await asyncio.to_thread(train.train, model_dir, training)
        promoted = await asyncio.to_thread(models.load_promoted, model_dir)
    for m in promoted.values():
        log.info("decision: serving %s %s %s", m.model_id, m.meta.version, m.meta.metrics)
    refused = sorted(set(models.model_ids(model_dir)) - set(promoted))
    if refused:
        log.warning("decision: no promoted version of %s: not served", ", ".join(refused))
    shadows = await asyncio.to_thread(models.load_shadows, model_dir, promoted)
    for m in shadows.values():
        log.info(
            "decision: shadow %s %s (scored beside the live version, never traded)",
            m.model_id,
            m.meta.version,
        )
    return promoted, shadows


async def build(
    resources: Resources,
    decision_settings: DecisionSettings | None = None,
    training: TrainingSettings | None = None,
    queue: str = "decision-vectors",
) -> Mapping[str, Any]:
    settings = decision_settings or DecisionSettings()
    loaded, shadows = await load_models(settings, resources.settings.var_dir, training)
    memory = await open_memory(resources, settings) if settings.memory_enabled else None
    ensemble = Ensemble(
        loaded,
        budget_s=settings.inference_budget_ms / 1e3,
        threads=True,
        drift_window=settings.drift_window_vectors,
        memory=memory,
    )
    resources.on_close(_async(ensemble.close))
    shadow = ShadowScorer(shadows) if shadows else None
    if shadow is not None:
        resources.on_close(_async(shadow.close))

    # Strategy changes, signals, intents and their expiry are announced through decision's outbox.
    relay = OutboxRelay(
        PostgresOutbox(resources.postgres, "decision"),
        kafka=resources.kafka_publisher,
        nats=resources.nats_publisher,
    )
    await relay.start()
    resources.on_close(relay.stop)
    strategies = PostgresStrategyStore(resources.postgres, announce=strategy_updated_rows)
    signals = PostgresSignalStore(
        resources.postgres,
        intent_ttl=timedelta(seconds=settings.intent_ttl_s),
        answer_within=timedelta(seconds=settings.place_order_timeout_s),
    )
    cache = StrategyCache(strategies, settings.strategy_refresh_s)
    await cache.start()
    resources.on_close(cache.stop)

    clients = ClientFactory(resources.settings, principal=resources.service)
    resources.on_close(clients.close)
    engine = DecisionEngine(
        ensemble=ensemble,
        strategies=cache,
        signals=signals,
        execution=clients.stub(exec_grpc.ExecutionServiceStub, "execution"),
        delegations=DelegationCache(clients),
        relay=relay,
        place_timeout_s=settings.place_order_timeout_s,
        signal_batch=settings.signal_batch_size,
        signal_flush_s=settings.signal_flush_ms / 1e3,
        recent_keys=settings.recent_vector_keys,
        shadow=shadow,
        memory=memory,
    )
    engine.start()
    resources.on_close(engine.drain)
    sweeper = IntentSweeper(
        strategies,
        signals,
        every_s=settings.intent_sweep_s,
        relay=relay,
        on_expired=engine.forget_expired,
    )
    sweeper.start()
    resources.on_close(sweeper.stop)
    pruner = SignalPruner(strategies, signals, timedelta(hours=settings.signal_retention_hours))
    pruner.start()
    resources.on_close(pruner.stop)
    # Replicas partition the symbols (runtime.membership: rendezvous hashing
    # over the live replicas in Redis): each subscribes to the vectors of the
    # symbols it owns, so a symbol's vectors are decided by one replica, in
    # order, against a warm book; when a replica comes or goes, its symbols
    # move and their books are read again from PostgreSQL. Only the symbols
    # some enabled strategy trades are subscribed to, following the strategy
    # cache. Core NATS in a queue group: while two replicas briefly both own a
    # symbol, each vector still reaches one of them (and one seen twice is
    # harmless: signals and orders are keyed by the vector).
    group = ReplicaGroup(
        resources.redis,
        f"decision:members:{queue}",
        resources.settings.replica_name(),
        beat_s=settings.replica_beat_s,
        ttl_s=settings.replica_ttl_s,
    )
    subscriber = NatsSubscriber(
        resources.nats,
        event_registry(),
        engine.handle,
        subjects=[VECTOR_SUBJECT_PREFIX + "*"],  # nominal: follow() sets the subscriptions
        queue=queue,
        name="decision-vectors",
        retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.05, jitter_s=0.01),
    )
    resources.on_close(subscriber.stop)
    resources.on_close(group.stop)  # leave before unsubscribing: the others take over at once
    resources.on_close(cache.stop)  # first: no reload re-subscribes while stopping

    async def follow(symbols: frozenset[str]) -> None:
        await subscriber.follow(vector_subject(s) for s in group.owned(symbols))

    async def regroup(members: object) -> None:
        engine.books.invalidate()  # a symbol gained was decided elsewhere until now
        await follow(cache.symbols())

    await group.start()
    group.on_change(regroup)
    await cache.follow(follow)
    api = DecisionApi(
        strategies,
        signals,
        ensemble,
        RedisInstrumentDirectory(resources.redis),
        cache.reload_tenant,
        relay=relay,
        memory=memory,
    )
    return {DECISION_SERVICE: api}


async def open_memory(resources: Resources, settings: DecisionSettings) -> MarketMemory:
    """The market memory on the vector store the settings select (pgvector or
    Weaviate, runtime.vectors), retried while the server comes up."""
    store: VectorStore | None = None
    async for attempt in AsyncRetrying(
        wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
        stop=stop_after_delay(60.0),
        retry=retry_if_not_exception_type(MigrationError),  # a server still starting is worth waiting for
        reraise=True,
    ):
        with attempt:
            store = await open_vector_store(
                resources.settings, "decision", table="market_states", dimension=embedding.DIMENSION
            )
    assert store is not None
    memory = MarketMemory(
        store,
        horizon=settings.memory_horizon_ticks,
        feature_set_version=FeatureConfig().version,
        batch=settings.memory_batch_size,
        flush_s=settings.memory_flush_ms / 1e3,
        retention=timedelta(days=settings.memory_retention_days),
        max_lookups=settings.memory_max_lookups,
    )
    memory.start()
    resources.on_close(store.close)  # after the memory's last writes (cleanups run last added first)
    resources.on_close(memory.stop)
    log.info("decision: market memory on %s", type(store).__name__)
    return memory


def _async(fn: Any) -> Any:
    async def run() -> None:
        fn()

    return run


def make_spec(
    decision_settings: DecisionSettings | None = None,
    training: TrainingSettings | None = None,
    queue: str = "decision-vectors",
) -> ServiceSpec:
    """The service with the given settings (default: from the environment)."""
    return ServiceSpec(
        name="decision",
        needs=("postgres", "redis", "nats", "kafka"),
        apis=[(DECISION_SERVICE, pb_grpc.add_DecisionServiceServicer_to_server)],
        build=partial(build, decision_settings=decision_settings, training=training, queue=queue),
    )


SPEC = make_spec()
