"""The hot path of decision: FeatureVectorComputed -> ensemble -> signals ->
order intents -> execution's PlaceOrder.

Vectors arrive on core NATS ``features.vectors.>`` (queue group
``decision-vectors``, so replicas share the work) and go to one lane per
symbol (:class:`SymbolLanes`): the symbols are decided concurrently, each
symbol's vectors one at a time and in order. Vectors that arrive while their
symbol's lane is busy wait in a short queue; when it is full the oldest is
dropped (counted in ``trading_decision_shed_vectors_total``): under overload a
decision on a long-superseded vector would act on a stale market, and
queueing it would only add latency to every later one.

Per vector:

1. the enabled strategies trading the symbol come from an in-memory cache
   (:class:`StrategyCache`, reloaded every ``strategy_refresh_s`` and at once
   after a local change);
2. the union of their models runs once (:class:`Ensemble`), each strategy
   combines its own models' results (domain.combine) and applies its rules
   (domain.decide_intent) against its position;
3. per tenant, one transaction records the signals, keyed by a vector key
   derived from (tenant, strategy, vector): a vector seen again (redelivered,
   replayed, raced by a replica) finds its signal and makes no second signal
   and no second intent;
4. SignalGenerated (NATS + Kafka) and OrderIntentCreated (Kafka) are
   published; orders are placed as MARKET IOC with the deterministic client
   order id, so execution places each at most once; the fill in the answer
   moves the strategy's position once (guarded by the signal row).

An intent whose placement got no answer (execution down, deadline) stays
pending in its signal row; the same vector seen again retries it with the
same client order id. A definitive refusal (risk denial, bad request) is
recorded and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

import grpc
from google.protobuf import duration_pb2
from opentelemetry import context as otel_context
from prometheus_client import Counter, Histogram
from trading.common.v1 import market_pb2
from trading.decision.v1 import decision_service_pb2 as pb
from trading.decision.v1 import events_pb2
from trading.execution.v1 import execution_service_pb2 as exec_pb
from trading.execution.v1 import types_pb2 as exec_types
from trading.features.v1 import events_pb2 as features_events
from trading.features.v1 import features_service_pb2

from runtime import decimals
from runtime.context import RequestContext, use_context
from runtime.errors import error_details
from runtime.messaging import Event, new_envelope, uuid7
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from services.decision.domain import (
    Combined,
    Direction,
    Intent,
    ModelResult,
    Side,
    StrategyConfig,
    client_order_id,
    combine,
    decide_intent,
)
from services.decision.inference import Ensemble
from services.decision.storage import NewSignal, PendingOrder, SignalStore, StrategyStore

log = logging.getLogger(__name__)
T = TypeVar("T")

PRODUCER = "decision"
VECTOR_EVENT = features_events.FeatureVectorComputed.DESCRIPTOR.full_name
VECTOR_SUBJECTS = "features.vectors.>"
# What decision may do on a tenant's behalf when it places an order.
ORDER_SCOPES = frozenset({"orders:write", "orders:read"})

SIGNALS = Counter("trading_decision_signals_total", "Signals generated, by direction.", ("direction",))
FALLBACKS = Counter("trading_decision_fallback_signals_total", "Signals for which at least one model failed.")
ORDERS = Counter("trading_decision_orders_total", "Order placements, by result.", ("result",))
DUPLICATE_VECTORS = Counter(
    "trading_decision_duplicate_vectors_total", "Strategy evaluations of a vector already seen (skipped)."
)
ORDER_LATENCY = Histogram(
    "trading_decision_order_latency_seconds",
    "From a feature vector's arrival to execution's PlaceOrder answer.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SHED = Counter(
    "trading_decision_shed_vectors_total",
    "Vectors dropped unhandled: newer vectors of the same symbol filled its lane's queue.",
)
LANE_FAILURES = Counter(
    "trading_decision_vector_failures_total", "Vectors whose handling raised (logged, not retried)."
)
EVALUATION_SECONDS = Histogram(
    "trading_decision_vector_seconds",
    "Handling of one feature vector: models, signals, orders.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)

# Codes after which a placement may have happened or may succeed later: keep
# the intent pending (the same client order id is retried).
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
    }
)


class SymbolLanes(Generic[T]):
    """One lane per key (symbol): items of a key are processed one at a time
    and in order, keys concurrently. At most ``max_waiting`` items wait per
    key; beyond, the oldest waiting one is dropped.

    Each item is processed in the trace context it was submitted in, so the
    spans of its handling stay children of the message's consumer span.
    """

    def __init__(self, process: Callable[[T], Awaitable[None]], max_waiting: int = 32) -> None:
        self._process = process
        self._max_waiting = max_waiting
        self._waiting: dict[str, deque[tuple[T, otel_context.Context]]] = defaultdict(deque)
        self._running: dict[str, asyncio.Task[None]] = {}

    def submit(self, key: str, item: T) -> None:
        queue = self._waiting[key]
        if len(queue) >= self._max_waiting:
            queue.popleft()
            SHED.inc()
        queue.append((item, otel_context.get_current()))
        if key not in self._running:
            self._running[key] = asyncio.create_task(self._run(key), name=f"decision-lane-{key}")

    async def _run(self, key: str) -> None:
        try:
            queue = self._waiting[key]
            while queue:
                item, ctx = queue.popleft()
                token = otel_context.attach(ctx)
                try:
                    await self._process(item)
                except Exception:
                    LANE_FAILURES.inc()
                    log.exception("handling a vector of %s failed", key)
                finally:
                    otel_context.detach(token)
        finally:
            self._running.pop(key, None)
            if not self._waiting.get(key):
                self._waiting.pop(key, None)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Drop what waits, let the lanes finish their current item (bounded)."""
        for queue in self._waiting.values():
            queue.clear()
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class StrategyCache:
    """Enabled strategies by symbol, reloaded from PostgreSQL."""

    def __init__(self, store: StrategyStore, refresh_s: float) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._by_tenant: dict[str, list[StrategyConfig]] = {}
        self._by_symbol: dict[str, list[StrategyConfig]] = {}
        self._task: asyncio.Task[None] | None = None

    def for_symbol(self, symbol: str) -> Sequence[StrategyConfig]:
        return self._by_symbol.get(symbol, ())

    async def reload(self) -> None:
        tenants = await self._store.tenants()
        by_tenant: dict[str, list[StrategyConfig]] = {}
        for tenant in tenants:
            by_tenant[tenant] = [r.config() for r in await self._store.enabled(tenant)]
        self._by_tenant = by_tenant
        self._index()

    async def reload_tenant(self, tenant: str) -> None:
        """After a change made through this process: visible to the next vector."""
        self._by_tenant[tenant] = [r.config() for r in await self._store.enabled(tenant)]
        self._index()

    def _index(self) -> None:
        by_symbol: dict[str, list[StrategyConfig]] = defaultdict(list)
        for configs in self._by_tenant.values():
            for config in configs:
                for symbol in config.symbols:
                    by_symbol[symbol].append(config)
        self._by_symbol = dict(by_symbol)

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._loop(), name="decision-strategy-cache")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.reload()
            except Exception as exc:
                log.warning("reloading strategies failed: %r", exc)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def signal_message(
    signal_id: str,
    strategy: StrategyConfig,
    vector: object,
    combined: Combined,
    generated_at: datetime,
    coid: str,
) -> pb.Signal:
    """The contract's Signal."""
    assert hasattr(vector, "symbol")
    signal = pb.Signal(
        signal_id=signal_id,
        strategy_id=strategy.strategy_id,
        symbol=vector.symbol,
        direction=int(combined.direction),  # type: ignore[arg-type]
        strength=combined.strength,
        confidence=combined.confidence,
        fallback=combined.fallback,
        fallback_reason=combined.fallback_reason,
        feature_tick_sequence=getattr(vector, "tick_sequence", 0),
        client_order_id=coid,
    )
    for r in combined.results:
        signal.model_scores.append(
            pb.ModelScore(
                model_id=r.model_id,
                model_version=r.version,
                outcome=int(r.outcome),  # type: ignore[arg-type]
                score=r.score,
                weight=r.weight if r.outcome == 1 else 0.0,
                latency=_duration(r.latency_s),
                error=r.error,
            )
        )
    signal.feature_as_of.CopyFrom(getattr(vector, "as_of"))  # noqa: B009 - proto field
    signal.generated_at.FromDatetime(generated_at)
    return signal


class DecisionEngine:
    """Handler of FeatureVectorComputed events."""

    def __init__(
        self,
        *,
        ensemble: Ensemble,
        strategies: StrategyCache,
        signals: SignalStore,
        execution: object,  # ExecutionServiceAsyncStub (typed loosely: generated stubs are dynamic)
        nats: NatsPublisher,
        kafka: KafkaPublisher,
        place_timeout_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ensemble = ensemble
        self._strategies = strategies
        self._signals = signals
        self._execution = execution
        self._nats = nats
        self._kafka = kafka
        self._place_timeout_s = place_timeout_s
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()
        self._lanes: SymbolLanes[tuple[Event, float]] = SymbolLanes(self._decide_arrived)
        self.vectors = 0

    async def handle(self, event: Event) -> None:
        """The subscriber's handler: hands a traded symbol's vector to its lane."""
        if event.envelope.event_type != VECTOR_EVENT:
            return
        assert isinstance(event.payload, features_events.FeatureVectorComputed)
        self.vectors += 1
        symbol = event.payload.vector.symbol
        if self._strategies.for_symbol(symbol):
            self._lanes.submit(symbol, (event, time.perf_counter()))

    async def _decide_arrived(self, item: tuple[Event, float]) -> None:
        await self.decide(*item)

    async def decide(self, event: Event, received: float) -> None:
        """One vector, start to end: models, signals, orders (``received``: its
        arrival, perf_counter seconds, for the latency histograms)."""
        assert isinstance(event.payload, features_events.FeatureVectorComputed)
        vector = event.payload.vector
        strategies = self._strategies.for_symbol(vector.symbol)
        if not strategies:
            return
        model_ids = {m for s in strategies for m in s.model_ids}
        results = await self._ensemble.evaluate(vector, model_ids)
        by_tenant: dict[str, list[StrategyConfig]] = defaultdict(list)
        for s in strategies:
            by_tenant[s.tenant_id].append(s)
        await asyncio.gather(
            *(self._tenant(t, group, vector, results, event, received) for t, group in by_tenant.items())
        )
        EVALUATION_SECONDS.observe(time.perf_counter() - received)

    async def _tenant(
        self,
        tenant: str,
        strategies: list[StrategyConfig],
        vector: features_service_pb2.FeatureVector,
        results: dict[str, ModelResult],
        event: Event,
        received: float,
    ) -> None:
        now = self._clock()
        positions = await self._signals.positions(tenant, [s.strategy_id for s in strategies], vector.symbol)
        as_of_ns = vector.as_of.ToNanoseconds()
        new: list[NewSignal] = []
        messages: dict[str, tuple[pb.Signal, Intent | None]] = {}
        for strategy in strategies:
            combined = combine([results[m] for m in strategy.model_ids], strategy.signal_threshold)
            key = client_order_id(
                tenant,
                strategy.strategy_id,
                vector.symbol,
                vector.feature_set_version,
                vector.tick_sequence,
                as_of_ns,
            )
            state = positions.get(strategy.strategy_id)
            decided = decide_intent(
                strategy,
                vector.symbol,
                combined.direction,
                state.quantity if state else Decimal(0),
                state.last_intent_at if state else None,
                now,
            )
            intent = decided if isinstance(decided, Intent) else None
            signal_id = str(uuid7())
            message = signal_message(signal_id, strategy, vector, combined, now, key if intent else "")
            messages[signal_id] = (message, intent)
            new.append(
                NewSignal(
                    signal_id=signal_id,
                    vector_key=key,
                    strategy_id=strategy.strategy_id,
                    symbol=vector.symbol,
                    direction=int(combined.direction),
                    generated_at=now,
                    client_order_id=key if intent else "",
                    side=int(intent.side) if intent else 0,
                    quantity=intent.quantity if intent else None,
                    payload=message.SerializeToString(),
                )
            )
        fresh, pending = await self._signals.record(tenant, new)
        DUPLICATE_VECTORS.inc(len(new) - len(fresh))
        correlation = event.envelope.correlation_id or event.envelope.event_id
        for s in fresh:
            message, intent = messages[s.signal_id]
            SIGNALS.labels(Direction(message.direction).name.lower()).inc()
            if message.fallback:
                FALLBACKS.inc()
            await self._publish_signal(tenant, message, intent, correlation, event.envelope.event_id)
        if pending:
            await asyncio.gather(*(self._place(tenant, p, correlation, received) for p in pending))

    async def _publish_signal(
        self, tenant: str, signal: pb.Signal, intent: Intent | None, correlation: str, causation: str
    ) -> None:
        payload = events_pb2.SignalGenerated(symbol=signal.symbol, signal=signal)
        envelope = new_envelope(
            payload, tenant_id=tenant, correlation_id=correlation, causation_id=causation, producer=PRODUCER
        )
        try:
            await self._nats.publish(envelope, payload=payload)
        except Exception as exc:
            log.warning("publishing SignalGenerated on NATS failed: %r", exc)
        self._in_background(self._kafka.publish(envelope, payload=payload))
        if intent is not None:
            created = events_pb2.OrderIntentCreated(
                intent_id=str(uuid7()),
                strategy_id=signal.strategy_id,
                signal_id=signal.signal_id,
                client_order_id=signal.client_order_id,
                symbol=signal.symbol,
                side=int(intent.side),  # type: ignore[arg-type]
                quantity=decimals.to_proto(intent.quantity),
                order_type=market_pb2.ORDER_TYPE_MARKET,
                signal_strength=signal.strength,
            )
            created.created_at.CopyFrom(signal.generated_at)
            intent_envelope = new_envelope(
                created,
                tenant_id=tenant,
                correlation_id=correlation,
                causation_id=envelope.event_id,
                producer=PRODUCER,
            )
            self._in_background(self._kafka.publish(intent_envelope, payload=created))

    def _in_background(self, coro: object) -> None:
        """Kafka publishes leave the hot path: awaited at shutdown, failures logged."""

        async def run() -> None:
            try:
                await coro  # type: ignore[misc]
            except Exception as exc:
                log.warning("publishing a decision event to Kafka failed: %r", exc)

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _place(self, tenant: str, order: PendingOrder, correlation: str, received: float) -> None:
        request = exec_pb.PlaceOrderRequest(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,  # type: ignore[arg-type]
            type=market_pb2.ORDER_TYPE_MARKET,
            time_in_force=exec_types.TIME_IN_FORCE_IOC,
            quantity=decimals.to_proto(order.quantity),
            strategy_id=order.strategy_id,
        )
        ctx = RequestContext(
            tenant_id=tenant, subject="service:decision", correlation_id=correlation, scopes=ORDER_SCOPES
        )
        try:
            with use_context(ctx):
                reply = await self._execution.PlaceOrder(request, timeout=self._place_timeout_s)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as err:
            ORDER_LATENCY.observe(time.perf_counter() - received)
            code = err.code()
            if code in _TRANSIENT:
                ORDERS.labels("unavailable").inc()
                log.warning("PlaceOrder %s got %s; stays pending", order.client_order_id, code.name)
                return
            details = error_details(err)
            reason = details.error_info.reason if details.error_info is not None else code.name
            ORDERS.labels("refused").inc()
            log.info("PlaceOrder %s refused: %s %s", order.client_order_id, reason, details.message)
            await self._signals.order_failed(tenant, order, f"{reason}: {details.message}")
            return
        ORDER_LATENCY.observe(time.perf_counter() - received)
        placed = reply.order
        filled = decimals.from_proto(placed.filled_quantity)
        signed = filled if order.side == int(Side.BUY) else -filled
        first = await self._signals.order_placed(tenant, order, placed.order_id, signed)
        ORDERS.labels("replayed" if reply.replayed or not first else "placed").inc()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Finish the vectors in hand, then wait (bounded) for background Kafka publishes."""
        await self._lanes.stop(timeout_s)
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)


class SignalPruner:
    """Deletes signals past the retention, per tenant, every few minutes."""

    def __init__(
        self, strategies: StrategyStore, signals: SignalStore, retention: timedelta, every_s: float = 300.0
    ) -> None:
        self._strategies = strategies
        self._signals = signals
        self._retention = retention
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="decision-signal-pruner")

    async def _loop(self) -> None:
        while True:
            try:
                cutoff = datetime.now(UTC) - self._retention
                for tenant in await self._strategies.tenants():
                    await self._signals.prune(tenant, cutoff)
            except Exception as exc:
                log.warning("pruning signals failed: %r", exc)
            await asyncio.sleep(self._every_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
