"""Waiting for something asynchronous to become true, without sleeps as
synchronisation: poll a probe until it answers something truthy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 20.0,
    what: str | Callable[[], str] = "the condition",
    *,
    interval: float = 0.1,
) -> T:
    """The first truthy answer of `probe`; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what  # a callable: the state at the deadline
            raise AssertionError(f"not reached within {timeout:g}s: {described}")
        await asyncio.sleep(interval)
