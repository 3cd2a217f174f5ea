"""Publishing off the caller's path, for copies of events whose loss is
tolerable (Kafka's replay copy of what NATS already carried live): awaiting
each broker ack in a hot handler would cap it at one event per round trip.

`BackgroundPublisher` queues events and one background task publishes them
with `publish_many`, in submission order, as many per call as are waiting
(up to `max_batch`). The queue is bounded: `submit` waits while it holds
`max_pending` events (backpressure instead of unbounded memory). A failed
batch is logged and counted (`failed`, `on_failure`), never raised to a
submitter. `stop` publishes what is queued (bounded), then ends the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2

log = logging.getLogger(__name__)

Item = tuple[event_pb2.EventEnvelope, pb_message.Message | None]


class BatchPublisher(Protocol):
    """What the background task needs of a publisher (Kafka's or NATS')."""

    async def publish_many(self, events: Sequence[Item]) -> None: ...


class BackgroundPublisher:
    """Publishes submitted events in the background, batched (see the module doc).
    `name` names it in logs and its task."""

    def __init__(
        self,
        publisher: BatchPublisher,
        *,
        name: str,
        max_pending: int = 20_000,
        max_batch: int = 1024,
        on_failure: Callable[[int, Exception], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self._name = name
        self._queue: asyncio.Queue[Item] = asyncio.Queue(max_pending)
        self._max_batch = max_batch
        self._on_failure = on_failure
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"background-publisher-{self._name}")

    async def submit(
        self, envelope: event_pb2.EventEnvelope, payload: pb_message.Message | None = None
    ) -> None:
        """Queue one event; waits only while the queue is full."""
        await self._queue.put((envelope, payload))

    async def submit_many(self, events: Sequence[Item]) -> None:
        """Queue events in order; waits only while the queue is full."""
        for item in events:
            await self._queue.put(item)

    async def drain(self) -> None:
        """Wait until everything submitted so far was published (or failed)."""
        await self._queue.join()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._publisher.publish_many(batch)
            except Exception as exc:
                self.failed += len(batch)
                log.warning("%s: %d events not published: %r", self._name, len(batch), exc)
                if self._on_failure is not None:
                    self._on_failure(len(batch), exc)
            else:
                self.sent += len(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (up to `timeout_s`), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
        except TimeoutError:
            log.warning("%s: %d events still queued after %.0fs", self._name, self._queue.qsize(), timeout_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
