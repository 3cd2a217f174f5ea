"""Stopping background tasks without hanging the shutdown.

A cancel can be swallowed inside a client library (seen in CI with a Redis
read and with aiokafka's fetch): a plain ``task.cancel(); await task`` then
waits forever and a service never finishes stopping. Background loops here
also check a stop flag of their own, so a swallowed cancel ends them at the
next turn; :func:`stop_task` bounds the wait either way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any] | None, *, name: str, timeout_s: float = 5.0) -> bool:
    """Cancel `task` and wait at most `timeout_s` for it to end; False (and a
    warning) when it did not. An exception it ended with is logged."""
    if task is None:
        return True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("%s did not end within %.0fs of its cancel", name, timeout_s)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r", name, task.exception())
    return True
