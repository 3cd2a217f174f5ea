"""Wiring of the features service: what it needs and what it serves, and the
tick consumer it runs (core NATS subscription on the TickBatch subjects of
its share of the symbols, FeaturesSettings.partition: all of them by
default; with replicas of one share, each publishes the vectors of its part
of that share's symbols)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from trading.features.v1 import features_service_pb2_grpc as pb_grpc

from runtime.contracts import event_registry
from runtime.membership import ReplicaGroup
from runtime.messaging import RetryPolicy
from runtime.messaging.background import BackgroundPublisher
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsSubscriber
from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.features.adapters.redis import RedisInstrumentUniverse, RedisVectorStore
from services.features.api import FeaturesApi
from services.features.consumer import FeatureProcessor, tick_subjects
from services.features.domain import BatchFeatureEngine, FeatureEngine
from services.features.settings import FeaturesSettings

FEATURES_SERVICE = "trading.features.v1.FeaturesService"


async def build(
    resources: Resources, group: str = "features", settings: FeaturesSettings | None = None
) -> Mapping[str, Any]:
    """``group``: the replica group whose members share the symbols (a
    test's own in-process instance names one of its own)."""
    settings = settings or FeaturesSettings()
    index, shares = settings.share
    # The vectors' replay copies on a producer of their own with large
    # batches: thousands a second do not fit the default's 16 KiB per request.
    producer = KafkaPublisher(
        resources.settings.kafka,
        event_registry(),
        client_id="features-vectors",
        max_batch_size=settings.kafka_batch_bytes,
        linger_ms=resources.settings.kafka.bulk_linger_ms,
    )
    await producer.start()
    resources.on_close(producer.close)
    # A round publishes what gathered during one kafka.bulk_linger_ms: more
    # than a second's worth of vectors at the highest tick rates (20,000/s).
    kafka = BackgroundPublisher(producer, name="features-vectors", max_pending=65_536, max_batch=65_536)
    # Replicas of one share split its symbols (runtime.membership): each
    # publishes the vectors of the symbols it owns, so a vector is published once.
    replicas = ReplicaGroup(
        resources.redis,
        f"features:members:{group}" + (f":{index}of{shares}" if shares > 1 else ""),
        resources.settings.replica_name(),
        beat_s=0.25,
        ttl_s=1.0,
    )
    await replicas.start()
    vectors = RedisVectorStore(resources.redis)
    processor = FeatureProcessor(
        BatchFeatureEngine() if settings.engine == "vectorised" else FeatureEngine(),
        nats=resources.nats_publisher,
        kafka=kafka,
        vectors=vectors,
        publishes=replicas.owns,
    )
    # No queue group: every replica of a share takes all of the share's
    # ticks, to keep its symbols' indicators warm (a symbol taken over is
    # published at once).
    subscriber = NatsSubscriber(
        resources.nats,
        event_registry(),
        processor.handle,
        subjects=tick_subjects(index, shares),
        name="features-tickbatches",
        # A failing handler blocks the subscription while it retries: one quick retry.
        retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.05, jitter_s=0.01),
    )
    kafka.start()
    processor.start()
    await subscriber.start()
    # The subscription is live on the server once this round trip is back.
    await resources.nats.flush()
    # on_close runs last added first: stop consuming, then flush vectors, then Kafka.
    resources.on_close(kafka.stop)
    resources.on_close(processor.stop)
    resources.on_close(subscriber.stop)
    resources.on_close(replicas.stop)  # first: the others take this replica's symbols at once
    return {FEATURES_SERVICE: FeaturesApi(processor, vectors, RedisInstrumentUniverse(resources.redis))}


def make_spec(group: str = "features", settings: FeaturesSettings | None = None) -> ServiceSpec:
    """The service in replica group ``group`` (see :func:`build`), with
    ``settings`` (default: from the environment)."""
    return ServiceSpec(
        name="features",
        needs=("redis", "nats", "kafka"),
        apis=[(FEATURES_SERVICE, pb_grpc.add_FeaturesServiceServicer_to_server)],
        build=partial(build, group=group, settings=settings),
    )


SPEC = make_spec()
