"""Redis commands of concurrent requests sent together (group commit).

Each request of the gateway that writes an Idempotency-Key slot makes two
small Redis commands. Sent one by one, each costs a pooled connection, a
round trip, a write and a read, and redis-py's per-command machinery: more
CPU than the rest of the gateway's own work on the request. :class:`Batcher`
queues the commands of every request that arrives while a batch is on its way
and sends them as the next non-transactional pipeline, so under load many
commands share one round trip and one connection, and a lone command still
goes out at once (one event-loop turn later), as a plain command. Each caller gets its own
command's reply or error; a pipeline that fails as a whole fails each of its
commands with that error.

The commands of one batch are independent (no MULTI): each is atomic on its
own, as it would be sent alone, and Redis runs them in the order they were
queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

# One command on a client or a pipeline (the same methods): ``lambda r: r.get(key)``.
Command = Callable[[Redis | Pipeline], Any]


class Batcher:
    """Sends queued commands as pipelines of at most ``max_batch``, one at a time."""

    def __init__(self, redis: Redis, max_batch: int = 128) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def execute(self, command: Command) -> Any:
        """Queue one command and wait for its reply (raises its error)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, reply))
        if self._sender is None:
            self._sender = loop.create_task(self._send())
        return await reply

    async def _send(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._send_batch(batch)
        finally:
            self._sender = None

    async def _send_batch(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        if len(batch) == 1:  # alone: a plain command costs less than a pipeline of one
            command, reply = batch[0]
            try:
                result = await command(self._redis)
            except Exception as exc:
                if not reply.done():
                    reply.set_exception(exc)
                return
            if not reply.done():
                reply.set_result(result)
            return
        pipe = self._redis.pipeline(transaction=False)
        try:
            for command, _ in batch:
                command(pipe)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the whole pipeline failed (connection, timeout, cancelled)
            error = exc if isinstance(exc, Exception) else asyncio.CancelledError()
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, reply), result in zip(batch, replies, strict=True):
            if reply.done():  # its caller went away
                continue
            if isinstance(result, Exception):
                reply.set_exception(result)
            else:
                reply.set_result(result)
