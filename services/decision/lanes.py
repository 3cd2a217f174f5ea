"""decision's per-symbol lanes: the vectors of one symbol are decided one at
a time and in order, different symbols concurrently (see engine.py)."""

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
