"""runtime.tasks.stop_task: a stop is bounded even when the task swallows its cancel."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from runtime.tasks import stop_task


async def test_a_task_that_swallows_its_cancel_does_not_hang_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what a client library did
            await asyncio.sleep(60)
        await release.wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await stop_task(task, name="stubborn", timeout_s=0.2) is False
    assert time.monotonic() - started < 2
    assert "stubborn did not end" in caplog.text
    release.set()
    await task


async def test_a_well_behaved_task_stops_at_once() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    assert await stop_task(task, name="sleeper") is True and task.cancelled()
    assert await stop_task(None, name="nothing") is True
