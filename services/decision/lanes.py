"""decision's vector batches: what has arrived is decided as one batch, each
symbol's vectors in order (see engine.py)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from opentelemetry import context as otel_context
from prometheus_client import Counter

log = logging.getLogger(__name__)
T = TypeVar("T")

SHED = Counter(
    "trading_decision_shed_vectors_total",
    "Vectors dropped unhandled: newer vectors of the same symbol filled its lane's queue.",
)
LANE_FAILURES = Counter(
    "trading_decision_vector_failures_total", "Vectors whose handling raised (logged, not retried)."
)


class VectorBatches(Generic[T]):
    """What has arrived, taken as one batch: items wait per key (symbol) while
    a batch is processed, then everything waiting is processed together, in
    arrival order (so each key's items stay in order, and batches never
    overlap). At most ``max_waiting`` items wait per key; beyond, the oldest
    waiting one is dropped (a decision on a long-superseded vector would act
    on a stale market).

    Each item comes with the trace context it was submitted in, so the spans
    of its handling can stay children of the message's consumer span.
    """

    def __init__(
        self,
        process: Callable[[list[tuple[T, otel_context.Context]]], Awaitable[None]],
        max_waiting: int = 32,
    ) -> None:
        self._process = process
        self._max_waiting = max_waiting
        self._waiting: dict[str, deque[tuple[int, T, otel_context.Context]]] = defaultdict(deque)
        self._arrived = 0
        self._task: asyncio.Task[None] | None = None

    def submit(self, key: str, item: T) -> None:
        queue = self._waiting[key]
        if len(queue) >= self._max_waiting:
            queue.popleft()
            SHED.inc()
        self._arrived += 1
        queue.append((self._arrived, item, otel_context.get_current()))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="decision-vector-batches")

    async def _run(self) -> None:
        try:
            while self._waiting:
                taken, self._waiting = self._waiting, defaultdict(deque)
                batch = sorted((x for queue in taken.values() for x in queue), key=lambda x: x[0])
                try:
                    await self._process([(item, ctx) for _, item, ctx in batch])
                except Exception:
                    LANE_FAILURES.inc(len(batch))
                    log.exception("handling a batch of %d vectors failed", len(batch))
        finally:
            self._task = None

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Drop what waits, let the batch in hand finish (bounded)."""
        self._waiting.clear()
        task = self._task
        if task is not None:
            _, pending = await asyncio.wait([task], timeout=timeout_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
