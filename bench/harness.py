"""Measurement machinery: HdrHistogram recording, closed-loop and open-loop
drivers, warm-up.

Latencies are recorded in nanoseconds into an HdrHistogram (1 ns .. 60 s,
3 significant digits: every reported value is within 0.1 % of the truth).

Closed loop (single-call latency, what the ADR's "< N ms per call" rows mean):
one caller, the next call starts when the previous one returned.

Open loop (rates, event delivery): message ``i`` has an *intended* send time
``t0 + i / rate`` fixed before the run starts. Its latency is its completion
time minus that intended time, so when the system (or the load generator)
stalls, every message that should have been sent during the stall is charged
the wait: coordinated omission (measuring only from the moment a late
message finally went out) is avoided. How late the sender itself was is
recorded separately, so a slow generator is visible instead of hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

NS_PER_MS = 1_000_000
# 1 ns .. 60 s with 3 significant digits.
_LOWEST_NS = 1
_HIGHEST_NS = 60_000_000_000
_DIGITS = 3

# Percentiles of the summary and of the plotted spectrum.
SUMMARY_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
)
SPECTRUM_PERCENTILES: tuple[float, ...] = (
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
)  # fmt: skip

Clock = Callable[[], int]
Sleep = Callable[[float], Awaitable[Any]]


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _DIGITS)


class Recorder:
    """One latency distribution (nanoseconds in, milliseconds out)."""

    def __init__(self) -> None:
        self.histogram = new_histogram()
        self.clamped = 0  # values beyond the histogram's range, recorded as its maximum

    def record_ns(self, value_ns: int) -> None:
        if value_ns < _LOWEST_NS:
            value_ns = _LOWEST_NS
        elif value_ns > _HIGHEST_NS:
            value_ns = _HIGHEST_NS
            self.clamped += 1
        self.histogram.record_value(value_ns)

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        return float(self.histogram.get_value_at_percentile(percentile)) / NS_PER_MS

    def summary(self) -> dict[str, float]:
        """count, min, mean, p50/p90/p95/p99/p99.9, max (ms); empty when nothing was recorded."""
        h = self.histogram
        if self.count == 0:
            return {}
        out: dict[str, float] = {
            "count": float(self.count),
            "min": float(h.get_min_value()) / NS_PER_MS,
            "mean": float(h.get_mean_value()) / NS_PER_MS,
        }
        values = h.get_percentile_to_value_dict([p for _, p in SUMMARY_PERCENTILES])
        for name, p in SUMMARY_PERCENTILES:
            out[name] = float(values[p]) / NS_PER_MS
        out["max"] = float(h.get_max_value()) / NS_PER_MS
        return out

    def spectrum(self) -> list[tuple[float, float]]:
        """(percentile, ms) pairs for plotting."""
        if self.count == 0:
            return []
        values = self.histogram.get_percentile_to_value_dict(list(SPECTRUM_PERCENTILES))
        return [(p, float(values[p]) / NS_PER_MS) for p in SPECTRUM_PERCENTILES]

    def encode(self) -> str:
        """The HdrHistogram V2 "histoblob" (base64): the whole distribution, for re-analysis."""
        blob = self.histogram.encode()
        return blob.decode() if isinstance(blob, bytes) else str(blob)


def decode_histogram(blob: str) -> HdrHistogram:
    return HdrHistogram.decode(blob.encode())


# ------------------------------------------------------------------------------------ closed loop


async def closed_loop(
    call: Callable[[], Awaitable[Any]],
    *,
    samples: int,
    warmup: int,
    clock: Clock = time.perf_counter_ns,
) -> Recorder:
    """Await `call` `warmup` times unrecorded, then `samples` times recorded,
    one at a time (concurrency 1)."""
    for _ in range(warmup):
        await call()
    rec = Recorder()
    for _ in range(samples):
        began = clock()
        await call()
        rec.record_ns(clock() - began)
    return rec


def closed_loop_sync(
    call: Callable[[], Any], *, samples: int, warmup: int, clock: Clock = time.perf_counter_ns
) -> Recorder:
    """`closed_loop` for in-process CPU work (no event loop in the measurement)."""
    for _ in range(warmup):
        call()
    rec = Recorder()
    for _ in range(samples):
        began = clock()
        call()
        rec.record_ns(clock() - began)
    return rec


# ------------------------------------------------------------------------------------ open loop


def intended_send_ns(start_ns: int, index: int, rate_per_s: float) -> int:
    """When message `index` (0-based) should go out at `rate_per_s` from `start_ns`."""
    return start_ns + round(index * 1e9 / rate_per_s)


@dataclass
class OpenLoopResult:
    """Latency (completion - intended send) of the recorded messages, the
    sender's own lateness (actual send - intended send) and what never completed."""

    latency: Recorder
    sender_lateness: Recorder
    sent: int
    completed: int
    missing: int
    duration_s: float
    rate_per_s: float

    @property
    def achieved_rate_per_s(self) -> float:
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0


@dataclass
class OpenLoopTracker:
    """Book-keeping of one open-loop run: intended times by message index and
    completions. `complete(i)` is called by whoever sees message `i` arrive
    (a handler, a response callback); duplicates are ignored."""

    warmup: int
    clock: Clock = time.perf_counter_ns
    intended: dict[int, int] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    latency: Recorder = field(default_factory=Recorder)
    lateness: Recorder = field(default_factory=Recorder)
    _all_done: asyncio.Event | None = None
    _expected: int = 0

    def complete(self, index: int, now_ns: int | None = None) -> None:
        if index in self.done or index not in self.intended:
            return
        now = self.clock() if now_ns is None else now_ns
        self.done.add(index)
        if index >= self.warmup:
            self.latency.record_ns(now - self.intended[index])
        if self._all_done is not None and len(self.done) >= self._expected:
            self._all_done.set()

    async def wait_all(self, expected: int, timeout_s: float) -> None:
        """Wait until `expected` messages completed, or `timeout_s` passed."""
        self._expected = expected
        self._all_done = asyncio.Event()
        if len(self.done) >= expected:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_done.wait(), timeout_s)


async def precise_sleep_until(
    target_ns: int, clock: Clock = time.perf_counter_ns, sleep: Sleep = asyncio.sleep
) -> None:
    """Sleep until `target_ns`: the event loop's timers round up to whole
    milliseconds (epoll), so the last 1.5 ms are spent yielding to the loop
    (which keeps handling I/O) instead of oversleeping by up to 1 ms."""
    while True:
        remaining = target_ns - clock()
        if remaining <= 0:
            return
        if remaining > 1_500_000:
            await sleep((remaining - 1_500_000) / 1e9)
        else:
            await sleep(0)


async def open_loop(
    send: Callable[[int], Awaitable[None]],
    tracker: OpenLoopTracker,
    *,
    count: int,
    rate_per_s: float,
    drain_timeout_s: float = 5.0,
    sleep: Sleep = asyncio.sleep,
) -> OpenLoopResult:
    """Send messages 0..count-1 at their intended times; `send(i)` must only
    start the send (not wait for delivery; spawn a task if the client
    blocks). The first `tracker.warmup` messages are sent at the same rate but
    not recorded. Waits up to `drain_timeout_s` after the last send for
    completions."""
    clock = tracker.clock
    start = clock() + 1_000_000  # a millisecond to get going
    for i in range(count):
        tracker.intended[i] = intended_send_ns(start, i, rate_per_s)
    for i in range(count):
        due = tracker.intended[i]
        await precise_sleep_until(due, clock, sleep)
        # A late sender does not skip or re-time messages: the lateness is
        # part of their latency (that is the point of the intended time).
        if i >= tracker.warmup:
            tracker.lateness.record_ns(clock() - due)
        await send(i)
    finished_sending = clock()
    await tracker.wait_all(count, drain_timeout_s)
    return OpenLoopResult(
        latency=tracker.latency,
        sender_lateness=tracker.lateness,
        sent=count,
        completed=len(tracker.done),
        missing=count - len(tracker.done),
        duration_s=(finished_sending - start) / 1e9,
        rate_per_s=rate_per_s,
    )


# ------------------------------------------------------------------------------ server processes


@contextlib.asynccontextmanager
async def server_process(
    module: str, *args: str, env: dict[str, str] | None = None, ready_timeout_s: float = 30.0
) -> AsyncIterator[Any]:
    """Run ``python -m <module> <args>`` (a measurement's servers, in their own
    process as the services run) and yield the JSON it prints on its first line
    once ready (its ports); SIGTERM, then SIGKILL after 5 s, at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), ready_timeout_s)
        if not line:
            raise RuntimeError(f"{module} exited before it was ready")
        yield json.loads(line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
