"""Helpers for tests of code that consumes events (against real brokers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from runtime.messaging.base import DeadLetter, DeadLetters, Event


class EventCollector:
    """A handler that records events; `next()` waits for the next one.
    `fail` (optional) runs first and may raise to make the handler fail."""

    def __init__(self, fail: Callable[[Event], Awaitable[None]] | None = None) -> None:
        self.events: list[Event] = []
        self.calls = 0
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._fail = fail

    async def __call__(self, event: Event) -> None:
        self.calls += 1
        if self._fail is not None:
            await self._fail(event)
        self.events.append(event)
        self._queue.put_nowait(event)

    async def next(self, timeout: float = 10.0) -> Event:
        """The next successfully handled event (TimeoutError if none comes)."""
        async with asyncio.timeout(timeout):
            return await self._queue.get()

    async def nothing_for(self, seconds: float) -> bool:
        """True when no event is handled within `seconds`."""
        try:
            await self.next(seconds)
        except TimeoutError:
            return True
        return False


async def wait_dead_letters(
    letters: DeadLetters, consumer: str | None, count: int, *, timeout: float = 15.0, poll_s: float = 0.1
) -> list[DeadLetter]:
    """The dead letters (of `consumer`) once there are at least `count`,
    on either transport (TimeoutError if they do not come): dead-lettering
    happens in the broker, so there is nothing local to wait on."""
    async with asyncio.timeout(timeout):
        while True:
            found = await letters.list(consumer)
            if len(found) >= count:
                return found
            await asyncio.sleep(poll_s)
