"""The batch writer of signals without an intent: off the hot path, one
multi-row insert per tenant and batch, with the outbox rows of the new ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from prometheus_client import Counter, Gauge, Histogram
from trading.decision.v1 import decision_service_pb2 as pb

from services.decision.ports import NewSignal, SignalStore

log = logging.getLogger(__name__)

DUPLICATE_VECTORS = Counter(
    "trading_decision_duplicate_vectors_total",
    "Strategy evaluations of a vector already seen (skipped): found in memory or by the unique vector key.",
)
QUEUED_SIGNALS = Gauge(
    "trading_decision_signal_writes_queued", "Signals without an intent waiting for the batch writer."
)
SIGNAL_BATCHES = Histogram(
    "trading_decision_signal_batch_size",
    "Signals without an intent per batch insert.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
SIGNAL_WRITE_FAILURES = Counter(
    "trading_decision_signal_write_failures_total", "Batch inserts of signals that failed (retried)."
)
DROPPED_SIGNALS = Counter(
    "trading_decision_dropped_signals_total",
    "Signals without an intent never recorded: the writer's queue overflowed or every attempt failed.",
)


@dataclass(frozen=True, slots=True)
class QueuedSignal:
    """A signal without an intent waiting for the batch writer."""

    tenant: str
    signal: NewSignal
    message: pb.Signal
    correlation: str
    causation: str
    attempts: int = 0


class SignalWriter:
    """Inserts signals without an intent in batches, with their events.

    A batch is written once ``max_batch`` signals wait or ``max_delay_s``
    after the first of them arrived, per tenant as one multi-row insert that
    skips vector keys recorded before and writes the outbox rows of the
    signals it inserted (so a signal recorded before, by another replica or
    before a restart, is not announced twice); `recorded` is told afterwards. A failed batch is retried (up to
    ``max_attempts`` writes per signal); beyond ``max_queued`` waiting signals
    the oldest are dropped. :meth:`stop` writes what is left."""

    def __init__(
        self,
        store: SignalStore,
        recorded: Callable[[Sequence[QueuedSignal]], Awaitable[None]],
        *,
        max_batch: int = 500,
        max_delay_s: float = 0.05,
        max_queued: int = 50_000,
        max_attempts: int = 3,
        retry_after_s: float = 0.5,
    ) -> None:
        self._store = store
        self._recorded = recorded
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._max_queued = max_queued
        self._max_attempts = max_attempts
        self._retry_after_s = retry_after_s
        self._queue: deque[QueuedSignal] = deque()
        self._queued = asyncio.Event()  # something waits
        self._full = asyncio.Event()  # a whole batch waits (or stopping): write now
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def add(self, item: QueuedSignal) -> None:
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            DROPPED_SIGNALS.inc()
        self._queue.append(item)
        QUEUED_SIGNALS.set(len(self._queue))
        self._queued.set()
        if len(self._queue) >= self._max_batch:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="decision-signal-writer")

    async def _run(self) -> None:
        while not self._stopping:
            await self._queued.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._max_delay_s):
                    await self._full.wait()
            if not await self.flush():
                await asyncio.sleep(self._retry_after_s)

    async def flush(self) -> bool:
        """Write everything queued now (with its events); False when a write failed."""
        async with self._writing:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
                QUEUED_SIGNALS.set(len(self._queue))
                try:
                    inserted = await self._write(batch)
                except Exception as exc:
                    SIGNAL_WRITE_FAILURES.inc()
                    log.warning("writing %d signals failed: %r", len(batch), exc)
                    again = [replace(q, attempts=q.attempts + 1) for q in batch]
                    kept = [q for q in again if q.attempts < self._max_attempts]
                    DROPPED_SIGNALS.inc(len(batch) - len(kept))
                    self._queue.extendleft(reversed(kept))
                    QUEUED_SIGNALS.set(len(self._queue))
                    return False
                DUPLICATE_VECTORS.inc(len(batch) - len(inserted))
                if inserted:
                    try:
                        await self._recorded(inserted)
                    except Exception as exc:  # recorded with their events: only the hook failed
                        log.warning("after recording %d signals: %r", len(inserted), exc)
            self._queued.clear()
            self._full.clear()
            return True

    async def _write(self, batch: Sequence[QueuedSignal]) -> list[QueuedSignal]:
        """Insert per tenant; the queued signals that were new, in batch order."""
        SIGNAL_BATCHES.observe(len(batch))
        by_tenant: dict[str, list[QueuedSignal]] = defaultdict(list)
        for q in batch:
            by_tenant[q.tenant].append(q)
        inserted: set[tuple[str, str]] = set()
        for tenant, queued in by_tenant.items():
            keys = await self._store.record_batch(tenant, [q.signal for q in queued])
            inserted.update((tenant, k) for k in keys)
        new: list[QueuedSignal] = []
        for q in batch:
            # A key twice in one batch (a redelivery raced the write) is announced once.
            if (q.tenant, q.signal.vector_key) in inserted:
                inserted.discard((q.tenant, q.signal.vector_key))
                new.append(q)
        return new

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop, then write what is left (bounded)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            self._queued.set()
            self._full.set()
            try:
                async with asyncio.timeout(timeout_s):
                    await task
            except TimeoutError:
                log.warning("the signal writer did not stop in %.1fs", timeout_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                # Each failed write counts against a signal's attempts: this ends.
                for _ in range(self._max_attempts):
                    if await self.flush():
                        return
                    await asyncio.sleep(self._retry_after_s)
        if self._queue:
            DROPPED_SIGNALS.inc(len(self._queue))
            log.error("%d signals left unwritten at shutdown", len(self._queue))
            self._queue.clear()
