"""The hot path of decision: FeatureVectorComputed -> ensemble -> signals ->
order intents -> execution's PlaceOrder.

Vectors arrive on core NATS ``features.vectors.<symbol>`` for the symbols some
enabled strategy trades, and only those: the subscription follows the
strategy cache (:meth:`StrategyCache.follow`, ``NatsSubscriber.follow``), so
the vectors of untraded symbols are never delivered, decoded or traced. The
queue group ``decision-vectors`` lets replicas share the work. What has
arrived is decided as one batch (:class:`VectorBatches`): vectors that arrive
while a batch is decided wait and form the next one, in arrival order, so
each symbol's vectors are decided in order. Per symbol at most 32 wait; when
more come the oldest is dropped (counted in
``trading_decision_shed_vectors_total``): under overload a decision on a
long-superseded vector would act on a stale market.

In a batch every vector is recorded and decided as before, in order (its
market state, a signal per strategy, an intent where the strategy's rules
allow: the cooldown usually leaves one per strategy and symbol), while the
models score all its vectors in one call each (:meth:`Ensemble.evaluate_many`;
the analog searches of each symbol's newest vector start first).

Per vector of a batch:

0. its market state is taken (the symbol's window of recent vectors,
   :class:`MarketMemory`): the analog model's query, and once its outcome
   is known ``horizon`` ticks later, a record the memory writes in batches
   off the order path;
1. the enabled strategies trading the symbol come from an in-memory cache
   (:class:`StrategyCache`, reloaded every ``strategy_refresh_s`` and at once
   after a local change);
2. the union of their models runs once (:class:`Ensemble`), each strategy
   combines its own models' results (domain.combine) and applies its rules
   (domain.decide_intent) against its position, held in memory
   (:class:`PositionBook`);
3. each strategy's verdict is keyed by a vector key derived from (tenant,
   strategy, vector). A key this process recorded and settled recently
   (:class:`RecentKeys`), or whose intent it is placing, is a duplicate
   (redelivered, re-published) and skipped at once;
4. a signal without an intent (HOLD, or an intent blocked by the cooldown or
   the position limit) costs no PostgreSQL round trip: it is queued for
   :class:`SignalWriter`, which inserts such signals in batches (the unique
   vector key skips one recorded before, e.g. by a replica) together with
   the outbox rows of SignalGenerated (NATS + Kafka) of those it inserted;
5. a signal with an intent costs the batch no round trip either: its
   cooldown is reserved and its order counted as if filled (for the
   position limit, :meth:`SymbolBook.position_for`) in memory at once, so
   the symbol's next vector is decided against them, and a task of its own
   does the rest, for all of the batch's intents of a tenant at once: it
   records their signals in one round trip (one statement,
   ``decision.record_signals``, that sets the tenant itself), where the
   unique vector key in PostgreSQL decides whether each is new (a key seen
   before makes no second signal and no second intent), with the outbox
   rows of SignalGenerated (NATS + Kafka) and OrderIntentCreated (Kafka),
   which the shared relay publishes (runtime/outbox.py); places the orders
   at once (concurrently) as MARKET IOC with the deterministic client order
   id, so execution places each at most once; and moves the strategy's position by the fill in
   the answer, once (guarded by the signal row). A vector counts as handled
   (``trading_decision_vector_seconds``) once its orders are answered;
   The record stays before the placement on purpose: it is the write-ahead
   record of the intent (a crash after the order was sent still leaves a
   pending intent the next vector retries or the sweeper expires, and an
   expired or refused intent is never placed again), and one statement
   costs well under a millisecond beside PlaceOrder;
6. then, with the orders decided and started, the shadow versions of the
   models that answered (:class:`ShadowScorer`, models.shadow_version) get
   the vector on their own threads; their scores are counted and logged,
   never combined, signalled or traded.

An intent whose placement got no answer (execution down, deadline) stays
pending in its signal row (and, for ten minutes, in the book); the same
vector seen again retries it with the same client order id, but only while
the answer could still come before the intent time-to-live ends. Then
:class:`IntentSweeper` expires it (EXPIRED is terminal: never placed again;
OrderIntentExpired is published). A definitive refusal (risk denial, bad
request) is recorded and not retried.

What memory holds, and for how long: the book of (tenant, symbol) — the
strategies' positions and last intent times, the pending intents — is loaded
from PostgreSQL on first use and then kept up to date by this process's own
records and fills; it is reloaded after every strategy-cache reload (once
none of its intents is in flight), so changes made by another replica are
seen within about ``strategy_refresh_s``. Until then a
replica may decide against a slightly stale position or cooldown; risk's
max-position check on PlaceOrder is the hard guard. The duplicate check in
memory is a fast path only: a key it no longer holds (evicted, another
replica, a restart) is still caught by the unique vector key in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

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
from runtime.outbox import KAFKA, NATS, OutboxRelay, OutboxRow, outbox_row
from runtime.security.delegations import PURPOSES, DelegationSource
from runtime.tasks import stop_task
from services.decision.book import FLAT, PositionBook, RecentKeys, SymbolBook
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
from services.decision.inference import Ensemble, Evaluation, ShadowScorer
from services.decision.lanes import LANE_FAILURES, VectorBatches
from services.decision.memory import MarketMemory, MarketState
from services.decision.ports import ExpiredIntent, NewSignal, PendingOrder, SignalStore, StrategyStore
from services.decision.signal_writer import DUPLICATE_VECTORS, QueuedSignal, SignalWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

PRODUCER = "decision"
VECTOR_EVENT = features_events.FeatureVectorComputed.DESCRIPTOR.full_name
VECTOR_SUBJECT_PREFIX = "features.vectors."
# What decision may do on a tenant's behalf when it places an order.
# Decision places a strategy's orders under this delegation from identity; its scopes are the purpose's.
ORDER_PURPOSE = "strategy-orders"
ORDER_SCOPES = PURPOSES[ORDER_PURPOSE].scopes

SIGNALS = Counter("trading_decision_signals_total", "Signals generated, by direction.", ("direction",))
FALLBACKS = Counter("trading_decision_fallback_signals_total", "Signals for which at least one model failed.")
ORDERS = Counter("trading_decision_orders_total", "Order placements, by result.", ("result",))
ORDER_LATENCY = Histogram(
    "trading_decision_order_latency_seconds",
    "From a feature vector's arrival to execution's PlaceOrder answer.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INTENTS_EXPIRED = Counter(
    "trading_decision_intents_expired_total", "Order intents given up after the time-to-live."
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


SymbolsListener = Callable[[frozenset[str]], Awaitable[None]]


def vector_subject(symbol: str) -> str:
    """The core NATS subject of a symbol's feature vectors."""
    return VECTOR_SUBJECT_PREFIX + symbol


class StrategyCache:
    """Enabled strategies by symbol, reloaded from PostgreSQL.

    Followers (:meth:`follow`) are told the traded symbols after every load;
    :meth:`on_reload` callbacks run after every full (periodic) reload."""

    def __init__(self, store: StrategyStore, refresh_s: float) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._by_tenant: dict[str, list[StrategyConfig]] = {}
        self._by_symbol: dict[str, list[StrategyConfig]] = {}
        self._task: asyncio.Task[None] | None = None
        self._followers: list[SymbolsListener] = []
        self._reloaded: list[Callable[[], None]] = []

    def for_symbol(self, symbol: str) -> Sequence[StrategyConfig]:
        return self._by_symbol.get(symbol, ())

    def symbols(self) -> frozenset[str]:
        """The symbols some enabled strategy trades."""
        return frozenset(self._by_symbol)

    async def follow(self, listener: SymbolsListener) -> None:
        """Call `listener` with the traded symbols now and after every load
        (changed or not: a listener that failed once catches up on the next)."""
        self._followers.append(listener)
        await listener(self.symbols())

    def on_reload(self, callback: Callable[[], None]) -> None:
        """Run `callback` after each full reload (what other replicas changed is visible then)."""
        self._reloaded.append(callback)

    async def reload(self) -> None:
        tenants = await self._store.tenants()
        by_tenant: dict[str, list[StrategyConfig]] = {}
        for tenant in tenants:
            by_tenant[tenant] = [r.config() for r in await self._store.enabled(tenant)]
        self._by_tenant = by_tenant
        self._index()
        for callback in self._reloaded:
            callback()
        await self._tell_followers()

    async def reload_tenant(self, tenant: str) -> None:
        """After a change made through this process: visible to the next vector
        (and its symbols subscribed to) when this returns."""
        self._by_tenant[tenant] = [r.config() for r in await self._store.enabled(tenant)]
        self._index()
        await self._tell_followers()

    async def _tell_followers(self) -> None:
        symbols = self.symbols()
        for listener in self._followers:
            try:
                await listener(symbols)
            except Exception as exc:  # retried with the next load
                log.warning("following the traded symbols failed: %r", exc)

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
        await stop_task(task, name="the strategy reloader")


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
                analog_ids=r.analogs,
            )
        )
    signal.feature_as_of.CopyFrom(getattr(vector, "as_of"))  # noqa: B009 - proto field
    signal.generated_at.FromDatetime(generated_at)
    return signal


@dataclass(frozen=True, slots=True)
class _Arrived:
    """A vector of a traded symbol in the batch at hand."""

    event: Event
    vector: features_service_pb2.FeatureVector
    received: float  # perf_counter seconds, for the latency histograms
    strategies: Sequence[StrategyConfig]
    state: MarketState | None
    context: otel_context.Context  # the trace context it arrived in


@dataclass(frozen=True, slots=True)
class _ToPlace:
    """A signal to record before its order is placed, and where it came from."""

    signal: NewSignal
    message: pb.Signal
    book: SymbolBook
    correlation: str
    received: float
    context: otel_context.Context


@dataclass(frozen=True, slots=True)
class _Answer:
    """Execution's answer to a placement: the order placed (its id and signed
    fill), or a definitive refusal (`error`)."""

    order: PendingOrder
    order_id: str = ""
    signed_fill: Decimal = Decimal(0)
    replayed: bool = False
    error: str | None = None


class DecisionEngine:
    """Handler of FeatureVectorComputed events."""

    def __init__(
        self,
        *,
        ensemble: Ensemble,
        strategies: StrategyCache,
        signals: SignalStore,
        execution: object,  # ExecutionServiceAsyncStub (typed loosely: generated stubs are dynamic)
        delegations: DelegationSource,
        place_timeout_s: float,
        relay: OutboxRelay | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        signal_batch: int = 500,
        signal_flush_s: float = 0.05,
        recent_keys: int = 100_000,
        shadow: ShadowScorer | None = None,
        memory: MarketMemory | None = None,
    ) -> None:
        self._ensemble = ensemble
        # Market states: observed per vector (the analog model's input), written off the order path.
        self._memory = memory
        # Candidate versions scored after each vector's orders are decided; never traded.
        self._shadow = shadow
        self._strategies = strategies
        self._signals = signals
        self._execution = execution
        self._delegations = delegations
        # Publishes the events the stores write into decision's outbox; woken after each commit.
        self._relay = relay
        self._place_timeout_s = place_timeout_s
        self._clock = clock
        self._placements: set[asyncio.Task[None]] = set()
        self._batches: VectorBatches[tuple[Event, float]] = VectorBatches(self._decide_arrived)
        self.books = PositionBook(signals)
        self.recent = RecentKeys(recent_keys)
        self.writer = SignalWriter(
            signals, self._recorded, max_batch=signal_batch, max_delay_s=signal_flush_s
        )
        strategies.on_reload(self.books.invalidate)
        self.vectors = 0

    def start(self) -> None:
        self.writer.start()

    async def handle(self, event: Event) -> None:
        """The subscriber's handler: queues a traded symbol's vector for the next batch."""
        if event.envelope.event_type != VECTOR_EVENT:
            return
        assert isinstance(event.payload, features_events.FeatureVectorComputed)
        self.vectors += 1
        symbol = event.payload.vector.symbol
        if self._strategies.for_symbol(symbol):
            self._batches.submit(symbol, (event, time.perf_counter()))

    async def _decide_arrived(self, batch: list[tuple[tuple[Event, float], otel_context.Context]]) -> None:
        await self.decide_batch([item for item, _ in batch], [ctx for _, ctx in batch])

    async def decide(self, event: Event, received: float) -> None:
        """One vector, start to end: models, signals, orders (``received``: its
        arrival, perf_counter seconds, for the latency histograms)."""
        await self.decide_batch([(event, received)])

    async def decide_batch(
        self,
        items: Sequence[tuple[Event, float]],
        contexts: Sequence[otel_context.Context] | None = None,
    ) -> None:
        """The vectors that arrived, as one batch (each symbol's in order): the
        models score them all at once, each is decided against the book as
        the ones before it left it (cooldown, position limit), and the
        batch's intents are recorded in one round trip per tenant and placed
        at once, off the batch."""
        now_ctx = otel_context.get_current()
        batch: list[_Arrived] = []
        for n, (event, received) in enumerate(items):
            assert isinstance(event.payload, features_events.FeatureVectorComputed)
            vector = event.payload.vector
            # In arrival order, so each symbol's window and outcomes follow its ticks.
            state = self._memory.observe(vector) if self._memory is not None else None
            strategies = self._strategies.for_symbol(vector.symbol)
            if strategies:
                ctx = contexts[n] if contexts is not None else now_ctx
                batch.append(_Arrived(event, vector, received, strategies, state, ctx))
        if not batch:
            return
        newest = {a.vector.symbol: i for i, a in enumerate(batch)}
        evaluations = [
            Evaluation(
                a.vector,
                tuple(dict.fromkeys(m for s in a.strategies for m in s.model_ids)),
                a.state,
                newest=newest[a.vector.symbol] == i,
            )
            for i, a in enumerate(batch)
        ]
        results = await self._ensemble.evaluate_many(evaluations)
        # Per tenant, the batch's signals to record before placing (intents,
        # and retries of pending intents), and per vector what it waits for.
        to_place: dict[str, list[_ToPlace]] = defaultdict(list)
        placing: list[set[str]] = []
        for a, result in zip(batch, results, strict=True):
            by_tenant: dict[str, list[StrategyConfig]] = defaultdict(list)
            for s in a.strategies:
                by_tenant[s.tenant_id].append(s)
            tenants: set[str] = set()
            for tenant, group in by_tenant.items():
                placed = await self._tenant(tenant, group, a, result)
                if placed:
                    to_place[tenant].extend(placed)
                    tenants.add(tenant)
            placing.append(tenants)
        tasks: dict[str, asyncio.Task[None]] = {}
        for tenant, signals in to_place.items():
            task = asyncio.create_task(self._record_and_place(tenant, signals))
            self._placements.add(task)
            task.add_done_callback(self._placements.discard)
            tasks[tenant] = task
        if self._shadow is not None:
            # After the orders are decided and started: off the order path, never awaited.
            for a, result in zip(batch, results, strict=True):
                self._shadow.observe(a.vector, result)
        for a, tenants in zip(batch, placing, strict=True):
            self._handled_when_answered(a.received, [tasks[t] for t in tenants])

    @staticmethod
    def _handled_when_answered(received: float, placements: list[asyncio.Task[None]]) -> None:
        """A vector counts as handled once its orders are answered (at once without any)."""
        if not placements:
            EVALUATION_SECONDS.observe(time.perf_counter() - received)
            return
        outstanding = len(placements)

        def placed(_: asyncio.Task[None]) -> None:
            nonlocal outstanding
            outstanding -= 1
            if not outstanding:
                EVALUATION_SECONDS.observe(time.perf_counter() - received)

        for task in placements:
            task.add_done_callback(placed)

    async def _tenant(
        self,
        tenant: str,
        strategies: list[StrategyConfig],
        arrived: _Arrived,
        results: dict[str, ModelResult],
    ) -> list[_ToPlace]:
        """The tenant's strategies on one vector; returns the signals to record
        and place (intents, or pending intents seen again)."""
        vector, event = arrived.vector, arrived.event
        now = self._clock()
        book = await self.books.get(tenant, vector.symbol, [s.strategy_id for s in strategies])
        as_of_ns = vector.as_of.ToNanoseconds()
        correlation = event.envelope.correlation_id or event.envelope.event_id
        causation = event.envelope.event_id
        to_place: list[_ToPlace] = []
        for strategy in strategies:
            key = client_order_id(
                tenant,
                strategy.strategy_id,
                vector.symbol,
                vector.feature_set_version,
                vector.tick_sequence,
                as_of_ns,
            )
            if key in self.recent or key in book.placing:
                DUPLICATE_VECTORS.inc()  # settled, or its intent is being recorded/placed now
                continue
            combined = combine([results[m] for m in strategy.model_ids], strategy.signal_threshold)
            state = book.positions.get(strategy.strategy_id, FLAT)
            exposure = state.quantity
            if combined.direction is not Direction.HOLD:
                exposure = book.position_for(strategy.strategy_id, combined.direction)
            decided = decide_intent(
                strategy, vector.symbol, combined.direction, exposure, state.last_intent_at, now
            )
            intent = decided if isinstance(decided, Intent) else None
            signal_id = str(uuid7())
            message = signal_message(signal_id, strategy, vector, combined, now, key if intent else "")
            new = NewSignal(
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
                outbox=tuple(self._signal_outbox(tenant, message, intent, correlation, causation)),
            )
            waiting = book.pending.get(key)
            if intent is None and waiting is None:
                # Nothing to place: recorded in the background, no round trip here.
                self.writer.add(QueuedSignal(tenant, new, message, correlation, causation))
                self.recent.add(key)
                continue
            # An intent (or a vector whose intent waits for its placement):
            # reserved in memory now — the cooldown, and the order counted as
            # if filled for the position limit — so the next vector is decided
            # against it while this one is recorded and placed.
            if intent is not None:
                book.positions[strategy.strategy_id] = replace(state, last_intent_at=now)
                sid, side = strategy.strategy_id, int(intent.side)
                waiting = PendingOrder(signal_id, sid, vector.symbol, key, side, intent.quantity, b"")
            assert waiting is not None
            book.placing[key] = waiting
            to_place.append(_ToPlace(new, message, book, correlation, arrived.received, arrived.context))
        return to_place

    async def _record_and_place(self, tenant: str, signals: list[_ToPlace]) -> None:
        """Off the batch: the unique vector key in PostgreSQL decides (one
        round trip for the tenant's whole batch), then the new (or still
        pending) intents are placed, all at once."""
        by_key = {s.signal.vector_key: s for s in signals}
        try:
            fresh, pending = await self._signals.record(tenant, [s.signal for s in signals])
            DUPLICATE_VECTORS.inc(len(signals) - len(fresh))
            new_or_waiting = {s.signal_id for s in fresh} | {p.client_order_id for p in pending}
            for s in signals:
                if s.signal.signal_id not in new_or_waiting and s.signal.vector_key not in new_or_waiting:
                    self.recent.add(s.signal.vector_key)  # recorded before, nothing left to place
            if fresh:
                self._wake_relay()
            for new in fresh:
                message = by_key[new.vector_key].message
                SIGNALS.labels(Direction(message.direction).name.lower()).inc()
                if message.fallback:
                    FALLBACKS.inc()
            for p in pending:
                by_key[p.client_order_id].book.pending[p.client_order_id] = p
            if pending:
                origins = [by_key[p.client_order_id] for p in pending]
                answers = await asyncio.gather(
                    *(self._place(tenant, o, p) for o, p in zip(origins, pending, strict=True))
                )
                answered = [(o, a) for o, a in zip(origins, answers, strict=True) if a is not None]
                if answered:
                    await self._answered(tenant, answered)
        except Exception:
            LANE_FAILURES.inc()
            log.exception("recording or placing the intents of %s failed", signals[0].signal.symbol)
        finally:
            for s in signals:
                s.book.placing.pop(s.signal.vector_key, None)

    async def _recorded(self, recorded: Sequence[QueuedSignal]) -> None:
        """The batch writer committed these signals (and their events' outbox rows)."""
        for q in recorded:
            SIGNALS.labels(Direction(q.message.direction).name.lower()).inc()
            if q.message.fallback:
                FALLBACKS.inc()
        if recorded:
            self._wake_relay()

    def _signal_outbox(
        self, tenant: str, signal: pb.Signal, intent: Intent | None, correlation: str, causation: str
    ) -> list[OutboxRow]:
        """The events of a signal, as outbox rows written only if the signal is
        inserted: SignalGenerated (NATS and Kafka, one envelope) and, with an
        intent, OrderIntentCreated (Kafka). Keyed by symbol, as the topics are."""
        payload = events_pb2.SignalGenerated(symbol=signal.symbol, signal=signal)
        envelope = new_envelope(
            payload, tenant_id=tenant, correlation_id=correlation, causation_id=causation, producer=PRODUCER
        )
        key = f"{tenant}/{signal.symbol}"
        rows = [outbox_row(envelope, NATS, partition_key=key), outbox_row(envelope, KAFKA, partition_key=key)]
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
            rows.append(outbox_row(intent_envelope, KAFKA, partition_key=key))
        return rows

    def _wake_relay(self) -> None:
        if self._relay is not None:
            self._relay.wake()

    async def _place(self, tenant: str, origin: _ToPlace, order: PendingOrder) -> _Answer | None:
        # In its vector's trace context: the PlaceOrder span is the vector's.
        token = otel_context.attach(origin.context)
        try:
            return await self._place_in_context(tenant, order, origin.correlation, origin.received)
        finally:
            otel_context.detach(token)

    async def _place_in_context(
        self, tenant: str, order: PendingOrder, correlation: str, received: float
    ) -> _Answer | None:
        """Execution's answer (None: none came, the intent stays pending)."""
        request = exec_pb.PlaceOrderRequest(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,  # type: ignore[arg-type]
            type=market_pb2.ORDER_TYPE_MARKET,
            time_in_force=exec_types.TIME_IN_FORCE_IOC,
            quantity=decimals.to_proto(order.quantity),
            strategy_id=order.strategy_id,
        )
        try:
            # The strategy acts for the tenant under identity's delegation, never
            # on a power of its own (runtime.security.delegations).
            delegation = await self._delegations.get(tenant, ORDER_PURPOSE)
            ctx = RequestContext(
                tenant_id=tenant,
                subject="service:decision",
                correlation_id=correlation,
                scopes=ORDER_SCOPES,
                delegation=delegation,
            )
            with use_context(ctx):
                reply = await self._execution.PlaceOrder(request, timeout=self._place_timeout_s)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as err:
            ORDER_LATENCY.observe(time.perf_counter() - received)
            code = err.code()
            if code in _TRANSIENT:
                ORDERS.labels("unavailable").inc()
                log.warning("PlaceOrder %s got %s; stays pending", order.client_order_id, code.name)
                return None
            details = error_details(err)
            reason = details.error_info.reason if details.error_info is not None else code.name
            ORDERS.labels("refused").inc()
            log.info("PlaceOrder %s refused: %s %s", order.client_order_id, reason, details.message)
            return _Answer(order, error=f"{reason}: {details.message}")
        ORDER_LATENCY.observe(time.perf_counter() - received)
        placed = reply.order
        filled = decimals.from_proto(placed.filled_quantity)
        signed = filled if order.side == int(Side.BUY) else -filled
        return _Answer(order, order_id=placed.order_id, signed_fill=signed, replayed=reply.replayed)

    async def _answered(self, tenant: str, answers: list[tuple[_ToPlace, _Answer]]) -> None:
        """Record the answers of a batch's placements in one round trip (off
        the order path: the orders are placed), then settle them in memory:
        a fill moves the strategy's position once (the signal row guards it)."""
        placed = [(a.order, a.order_id, a.signed_fill) for _, a in answers if a.error is None]
        refused = [(a.order, a.error) for _, a in answers if a.error is not None]
        first = await self._signals.orders_answered(tenant, placed, refused)
        for origin, answer in answers:
            order, book = answer.order, origin.book
            if answer.error is None:
                new = order.signal_id in first
                if new and answer.signed_fill:
                    position = book.positions.get(order.strategy_id, FLAT)
                    book.positions[order.strategy_id] = replace(
                        position, quantity=position.quantity + answer.signed_fill
                    )
                ORDERS.labels("replayed" if answer.replayed or not new else "placed").inc()
            self._settled(book, order)

    def forget_expired(self, tenant: str, intents: Sequence[ExpiredIntent]) -> None:
        """Drop intents the sweeper expired from this process's books: they
        are never placed again (the store's pending guard ensures it anyway)."""
        for intent in intents:
            self.books.drop_pending(tenant, intent.symbol, intent.client_order_id)
            self.recent.add(intent.client_order_id)

    def _settled(self, book: SymbolBook, order: PendingOrder) -> None:
        """The intent's placement is known (placed or refused): nothing left to retry."""
        book.pending.pop(order.client_order_id, None)
        self.recent.add(order.client_order_id)

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) for the placements in flight to be answered and recorded."""
        if self._placements:
            await asyncio.wait(list(self._placements), timeout=timeout_s)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Finish the vectors in hand and their placements, then write the queued
        signals (their events are in the outbox: the relay publishes them, now or after a restart)."""
        await self._batches.stop(timeout_s)
        await self.settle(timeout_s)
        await self.writer.stop(timeout_s)


def expired_rows(tenant: str, intents: Sequence[ExpiredIntent]) -> list[OutboxRow]:
    """The outbox rows announcing `intents` expired: OrderIntentExpired on
    Kafka, keyed like the intent's other events (tenant/symbol)."""
    rows = []
    for intent in intents:
        payload = events_pb2.OrderIntentExpired(
            strategy_id=intent.strategy_id,
            signal_id=intent.signal_id,
            client_order_id=intent.client_order_id,
            symbol=intent.symbol,
            side=intent.side,  # type: ignore[arg-type]
            quantity=decimals.to_proto(intent.quantity),
            previous_status=pb.INTENT_STATUS_PENDING,
        )
        payload.created_at.FromDatetime(intent.created_at)
        payload.expired_at.FromDatetime(intent.expired_at)
        # Correlated by the signal: the vector's correlation id is not kept.
        envelope = new_envelope(payload, tenant_id=tenant, correlation_id=intent.signal_id, producer=PRODUCER)
        rows.append(outbox_row(envelope, KAFKA, partition_key=f"{tenant}/{intent.symbol}"))
    return rows


class _Periodic:
    """A background task running :meth:`run_once` every `every_s` seconds
    (errors logged, the next round still comes); the sweeper and the pruner."""

    task_name = "decision-periodic"
    what = "a periodic round"

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.task_name)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("%s failed: %r", self.what, exc)
            await asyncio.sleep(self._every_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task, name=self.what)


class IntentSweeper(_Periodic):
    """Expires order intents that stayed pending past the time-to-live.

    Every `every_s`, per tenant (RLS), one guarded UPDATE ... RETURNING moves
    the due intents to EXPIRED (SignalStore.expire_due: once each, also with
    several replicas sweeping) and writes an OrderIntentExpired for each into
    decision's outbox in the same transaction (Kafka, ``trading.decision.intents``,
    published by the relay), and this process drops them from its books
    (other replicas drop them at their next book reload).
    """

    def __init__(
        self,
        strategies: StrategyStore,
        signals: SignalStore,
        *,
        every_s: float,
        relay: OutboxRelay | None = None,
        on_expired: Callable[[str, Sequence[ExpiredIntent]], None] = lambda tenant, intents: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(every_s)
        self._strategies = strategies
        self._signals = signals
        self._relay = relay
        self._on_expired = on_expired
        self._clock = clock

    task_name = "decision-intent-sweeper"
    what = "expiring intents"

    async def run_once(self) -> None:
        await self.sweep()

    async def sweep(self) -> int:
        """One pass over every tenant; returns how many intents expired."""
        return sum([await self.sweep_tenant(tenant) for tenant in await self._strategies.tenants()])

    async def sweep_tenant(self, tenant: str) -> int:
        """Expire the tenant's due intents (in batches); returns how many this sweeper expired."""
        expired = 0
        while True:
            batch = await self._signals.expire_due(tenant, self._clock(), expired_rows)
            if not batch:
                return expired
            expired += len(batch)
            INTENTS_EXPIRED.inc(len(batch))
            self._on_expired(tenant, batch)
            if self._relay is not None:
                self._relay.wake()


class SignalPruner(_Periodic):
    """Deletes signals past the retention, per tenant, every few minutes."""

    def __init__(
        self, strategies: StrategyStore, signals: SignalStore, retention: timedelta, every_s: float = 300.0
    ) -> None:
        super().__init__(every_s)
        self._strategies = strategies
        self._signals = signals
        self._retention = retention

    task_name = "decision-signal-pruner"
    what = "pruning signals"

    async def run_once(self) -> None:
        cutoff = datetime.now(UTC) - self._retention
        for tenant in await self._strategies.tenants():
            await self._signals.prune(tenant, cutoff)
