"""Decision's market memory: every market state it observed, with the
outcome that followed, in the vector store (runtime.vectors, scope
``market``), and the searches the analog model and FindSimilarStates make.

Per symbol, in the order of its vectors (the engine's symbol lane calls
:meth:`MarketMemory.observe` first thing for each vector):

1. the vector's EMBEDDING_FEATURES row joins the symbol's window (the last
   ``embedding.SPAN`` rows) and the state now is embedded
   (services/decision/domain/embedding.py): the analog model's query, and what
   FindSimilarStates calls "now";
2. the state waits in memory for its outcome: once a vector ``horizon``
   ticks later (by tick sequence, the training label's horizon) arrives,
   its mid against the state's gives UP, DOWN or FLAT and the move in basis
   points, as the training label and analytics' scoring define them;
3. the resolved state goes to a queue that a background task writes in
   batches (``batch`` states or ``flush_s`` after the first waiting), never
   awaited by the vector's decision or its orders. Writes are upserts by a
   deterministic id (embedding.state_id), so a redelivered vector or a
   second replica writes the same record again, not a second one.

So the store holds only states whose outcome is known: a search can never
look ahead, and no record is written twice to fill its outcome in. The
price: a restart loses the states still waiting (at most ``horizon`` per
symbol). The memory covers the symbols decision follows (those some enabled
strategy trades) from when it follows them; a symbol's sequence going
backwards (a restarted feed) starts its window again. A retention task
deletes states older than ``retention``.

Lookups are bounded: at most ``max_lookups`` run at once; the caller (the
ensemble) holds them to its inference budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from runtime.tasks import stop_task
from runtime.vectors import MARKET, Neighbour, PayloadValue, VectorRecord, VectorStore
from services.decision.domain import analog, embedding

log = logging.getLogger(__name__)

STATES = Counter(
    "trading_decision_memory_states_total",
    "Market states by what became of them: written (to the vector store), dropped (queue full or"
    " writes failing), lost (still waiting for their outcome when the symbol's feed restarted).",
    ("result",),
)
QUEUED = Gauge("trading_decision_memory_queued", "Resolved market states waiting for the batch writer.")
LOOKUP_SECONDS = Histogram(
    "trading_decision_memory_lookup_seconds",
    "k-nearest-neighbour searches of the market memory (answered ones).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)
WRITE_FAILURES = Counter(
    "trading_decision_memory_write_failures_total", "Batch writes of market states that failed (retried)."
)


class MemoryBusy(Exception):
    """Too many lookups in flight: answered at once instead of queued."""


@dataclass(frozen=True, slots=True)
class MarketState:
    """A symbol's market state at one feature vector."""

    id: str
    symbol: str
    at: datetime
    tick_sequence: int
    mid: float
    embedding: list[float] = field(repr=False)


@dataclass
class _Track:
    """One symbol: its window of rows, its states waiting for an outcome, its state now."""

    rows: deque[list[float]] = field(default_factory=lambda: deque(maxlen=embedding.SPAN))
    pending: deque[MarketState] = field(default_factory=deque)
    last_sequence: int = -1
    current: MarketState | None = None


def outcome_of(mid_then: float, mid_later: float) -> tuple[int, float]:
    """(UP/DOWN/FLAT, the move in basis points) of a state resolved at `mid_later`."""
    move = math.log(mid_later / mid_then) * 1e4 if mid_then > 0 and mid_later > 0 else 0.0
    if mid_later > mid_then:
        return analog.UP, move
    if mid_later < mid_then:
        return analog.DOWN, move
    return analog.FLAT, 0.0


def _mid(vector: Any) -> float:
    raw = getattr(vector, "mid_price", None)
    value = getattr(raw, "value", raw)  # the contract's Decimal message or a Decimal
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def _as_of(vector: Any) -> datetime:
    as_of = getattr(vector, "as_of", None)
    if isinstance(as_of, datetime):
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    if as_of is not None and hasattr(as_of, "ToDatetime"):
        converted: datetime = as_of.ToDatetime(tzinfo=UTC)
        return converted
    return datetime.now(UTC)


def _as_of_ns(vector: Any, at: datetime) -> int:
    as_of = getattr(vector, "as_of", None)
    if as_of is not None and hasattr(as_of, "ToNanoseconds"):
        ns: int = as_of.ToNanoseconds()
        return ns
    return int(at.timestamp() * 1e9)


class MarketMemory:
    """See the module docstring."""

    def __init__(
        self,
        store: VectorStore,
        *,
        horizon: int = 20,
        feature_set_version: str = "",
        batch: int = 500,
        flush_s: float = 0.5,
        max_queued: int = 50_000,
        max_attempts: int = 3,
        retention: timedelta = timedelta(days=30),
        prune_every_s: float = 600.0,
        max_lookups: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if horizon < 1:
            raise ValueError("horizon must be at least 1 tick")
        self.store = store
        self.horizon = horizon
        # Only vectors of this feature set make states (others are not comparable); "" takes any.
        self.feature_set_version = feature_set_version
        self._batch = batch
        self._flush_s = flush_s
        self._max_queued = max_queued
        self._max_attempts = max_attempts
        self._retention = retention
        self._prune_every_s = prune_every_s
        self._max_lookups = max_lookups
        self._clock = clock
        self._tracks: dict[str, _Track] = {}
        self._queue: deque[tuple[VectorRecord, int]] = deque()  # record, attempts so far
        self._queued = asyncio.Event()  # something waits
        self._full = asyncio.Event()  # a whole batch waits (or stopping): write now
        self._tasks: list[asyncio.Task[None]] = []
        self._lookups = 0
        self._stopping = False

    # ---------------------------------------------------------------- observing

    def observe(self, vector: Any) -> MarketState | None:
        """Take a symbol's next vector (see the module docstring); the state
        now, or None when the vector makes none (not warmed up, another
        feature set, a value that is not finite)."""
        symbol = str(getattr(vector, "symbol", ""))
        sequence = int(getattr(vector, "tick_sequence", 0))
        track = self._tracks.get(symbol)
        if track is None:
            track = self._tracks[symbol] = _Track()
        if sequence == track.last_sequence:
            return track.current  # the same vector again
        if sequence < track.last_sequence:
            # The feed restarted its sequence: what waits cannot be resolved by it.
            STATES.labels("lost").inc(len(track.pending))
            track = self._tracks[symbol] = _Track()
        track.last_sequence = sequence
        mid = _mid(vector)
        if math.isfinite(mid):
            self._resolve(track, sequence, mid)
        track.current = None
        if not getattr(vector, "warmed_up", True) or not math.isfinite(mid):
            return None
        version = str(getattr(vector, "feature_set_version", ""))
        if self.feature_set_version and version != self.feature_set_version:
            return None
        try:
            track.rows.append(embedding.embedding_row(vector))
            vec = embedding.embed(track.rows)
        except (AttributeError, TypeError, ValueError):
            return None
        at = _as_of(vector)
        state = MarketState(
            embedding.state_id(symbol, version, sequence, _as_of_ns(vector, at)),
            symbol,
            at,
            sequence,
            mid,
            vec,
        )
        track.pending.append(state)
        track.current = state
        return state

    def _resolve(self, track: _Track, sequence: int, mid: float) -> None:
        while track.pending and track.pending[0].tick_sequence + self.horizon <= sequence:
            state = track.pending.popleft()
            outcome, move = outcome_of(state.mid, mid)
            payload: dict[str, PayloadValue] = {
                "outcome": outcome,
                "move_bps": round(move, 4),
                "tick_sequence": state.tick_sequence,
                "horizon_ticks": self.horizon,
                "embedding": embedding.EMBEDDING_VERSION,
            }
            self._enqueue(VectorRecord(state.id, state.symbol, state.at, state.embedding, payload))

    def _enqueue(self, record: VectorRecord, attempts: int = 0) -> None:
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            STATES.labels("dropped").inc()
        self._queue.append((record, attempts))
        QUEUED.set(len(self._queue))
        self._queued.set()
        if len(self._queue) >= self._batch:
            self._full.set()

    def current(self, symbol: str) -> MarketState | None:
        """The state of `symbol` at its latest vector (None: not followed, or not warmed up)."""
        track = self._tracks.get(symbol)
        return track.current if track is not None else None

    # ---------------------------------------------------------------- searching

    async def similar(
        self,
        state: MarketState,
        k: int,
        *,
        symbol: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[Neighbour]:
        """The `k` stored states most similar to `state` (MemoryBusy when
        ``max_lookups`` searches are in flight)."""
        if self._lookups >= self._max_lookups:
            raise MemoryBusy(f"{self._lookups} market memory lookups in flight")
        self._lookups += 1
        began = time.perf_counter()
        try:
            found = await self.store.search(MARKET, state.embedding, k, symbol=symbol, start=start, end=end)
        finally:
            self._lookups -= 1
        LOOKUP_SECONDS.observe(time.perf_counter() - began)
        return found

    # ---------------------------------------------------------------- writing

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="decision-memory-writer"),
            asyncio.create_task(self._prune_loop(), name="decision-memory-retention"),
        ]

    async def _write_loop(self) -> None:
        while not self._stopping:
            await self._queued.wait()
            # The first state of a batch waits at most flush_s for the others.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_s):
                    await self._full.wait()
            if not await self.flush():
                await asyncio.sleep(1.0)

    async def flush(self) -> bool:
        """Write what is queued now; False when a write failed (its states are retried)."""
        while self._queue:
            n = min(self._batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            QUEUED.set(len(self._queue))
            try:
                await self.store.upsert(MARKET, [r for r, _ in batch])
            except Exception as exc:
                WRITE_FAILURES.inc()
                log.warning("writing %d market states failed: %r", len(batch), exc)
                kept = [(r, a + 1) for r, a in batch if a + 1 < self._max_attempts]
                STATES.labels("dropped").inc(len(batch) - len(kept))
                self._queue.extendleft(reversed(kept))
                QUEUED.set(len(self._queue))
                return False
            STATES.labels("written").inc(len(batch))
        self._queued.clear()
        self._full.clear()
        return True

    async def _prune_loop(self) -> None:
        while not self._stopping:
            try:
                deleted = await self.store.delete_older_than(MARKET, self._clock() - self._retention)
                if deleted:
                    log.info("market memory: %d states past the retention deleted", deleted)
            except Exception as exc:
                log.warning("market memory retention failed: %r", exc)
            await asyncio.sleep(self._prune_every_s)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the tasks, then write what is queued (bounded)."""
        self._stopping = True
        self._queued.set()
        self._full.set()
        if self._tasks:
            # The writer ends by itself after its current batch (a cancel could lose that batch).
            await asyncio.wait(self._tasks[:1], timeout=timeout_s)
        for task in self._tasks:
            await stop_task(task, name="the market memory's " + task.get_name())
        self._tasks = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for _ in range(self._max_attempts):
                    if await self.flush():
                        return
        if self._queue:
            STATES.labels("dropped").inc(len(self._queue))
            log.warning("%d market states left unwritten at shutdown", len(self._queue))
            self._queue.clear()
