"""The benchmark's measurement math: percentiles of known distributions,
open-loop intended-time accounting (coordinated omission avoided), closed
loops, with a fake clock so the numbers are exact."""

from __future__ import annotations

import asyncio

import pytest

from bench.harness import (
    NS_PER_MS,
    OpenLoopTracker,
    Recorder,
    closed_loop,
    closed_loop_sync,
    decode_histogram,
    intended_send_ns,
    open_loop,
)

MS = NS_PER_MS


def close(actual: float, expected: float, rel: float = 1e-3) -> bool:
    """HdrHistogram with 3 significant digits: within 0.1 %."""
    return actual == pytest.approx(expected, rel=rel)


class FakeClock:
    """Time that moves only when the code under test sleeps or a test says so.
    sleep(0) (a yield to the loop) costs 0.1 ms, so busy-wait loops end."""

    def __init__(self) -> None:
        self.now = 10_000 * MS

    def __call__(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += round(seconds * 1e9) if seconds > 0 else 100_000
        await asyncio.sleep(0)


def test_percentiles_of_a_uniform_distribution() -> None:
    rec = Recorder()
    for us in range(1, 100_001):  # 1 us .. 100 ms, each once
        rec.record_ns(us * 1_000)
    s = rec.summary()
    assert s["count"] == 100_000
    assert close(s["p50"], 50.0)
    assert close(s["p90"], 90.0)
    assert close(s["p95"], 95.0)
    assert close(s["p99"], 99.0)
    assert close(s["p99_9"], 99.9)
    assert close(s["max"], 100.0)
    assert close(s["min"], 0.001)
    assert close(s["mean"], 50.0005)


def test_tail_percentiles_of_a_bimodal_distribution() -> None:
    # 99 % fast (1 ms), 1 % slow (100 ms): p99 is still fast, p99.9 is slow.
    rec = Recorder()
    for _ in range(990):
        rec.record_ns(1 * MS)
    for _ in range(10):
        rec.record_ns(100 * MS)
    s = rec.summary()
    assert close(s["p50"], 1.0)
    assert close(s["p99"], 1.0)
    assert close(s["p99_9"], 100.0)
    assert close(s["max"], 100.0)
    spectrum = dict(rec.spectrum())
    assert close(spectrum[50.0], 1.0) and close(spectrum[100.0], 100.0)


def test_out_of_range_values_are_clamped_and_counted() -> None:
    rec = Recorder()
    rec.record_ns(0)
    rec.record_ns(-5)
    rec.record_ns(120 * 1_000_000_000)  # 120 s, beyond the 60 s range
    assert rec.count == 3
    assert rec.clamped == 1
    assert close(rec.summary()["max"], 60_000.0)


def test_empty_recorder_has_no_summary() -> None:
    assert Recorder().summary() == {}
    assert Recorder().spectrum() == []


def test_encoded_histogram_round_trips() -> None:
    rec = Recorder()
    for v in (1, 2, 3, 5, 8, 13, 21):
        rec.record_ns(v * MS)
    copy = decode_histogram(rec.encode())
    assert copy.get_total_count() == 7
    assert copy.get_value_at_percentile(99.0) == rec.histogram.get_value_at_percentile(99.0)


async def test_closed_loop_records_each_call_and_skips_warmup() -> None:
    clock = FakeClock()
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        clock.now += calls * MS  # call n takes n ms

    rec = await closed_loop(call, samples=10, warmup=5, clock=clock)
    assert calls == 15
    assert rec.count == 10
    # Recorded calls are numbers 6..15: 6 ms .. 15 ms.
    assert close(rec.summary()["min"], 6.0) and close(rec.summary()["max"], 15.0)


def test_closed_loop_sync() -> None:
    clock = FakeClock()

    def call() -> None:
        clock.now += 2 * MS

    rec = closed_loop_sync(call, samples=4, warmup=1, clock=clock)
    assert rec.count == 4 and close(rec.summary()["p50"], 2.0)


def test_intended_send_times_are_fixed_by_the_rate() -> None:
    assert [intended_send_ns(1_000, i, 1_000.0) for i in range(4)] == [1_000, 1_001_000, 2_001_000, 3_001_000]
    assert intended_send_ns(0, 3, 3.0) == 1_000_000_000


async def test_open_loop_sends_on_schedule_without_stalls() -> None:
    clock = FakeClock()
    tracker = OpenLoopTracker(warmup=10, clock=clock)
    sent_at: list[int] = []

    async def send(i: int) -> None:
        sent_at.append(clock.now)
        tracker.complete(i)  # delivered instantly

    result = await open_loop(send, tracker, count=30, rate_per_s=100.0, sleep=clock.sleep)
    assert sent_at == [tracker.intended[i] for i in range(30)]
    assert tracker.intended[1] - tracker.intended[0] == 10 * MS
    assert result.sent == 30 and result.completed == 30 and result.missing == 0
    assert result.latency.count == 20  # warm-up not recorded
    assert result.latency.summary()["max"] < 0.001  # ~0: delivered at the intended time


async def test_open_loop_charges_a_stall_to_every_message_queued_behind_it() -> None:
    """A 500 ms stall at message 3 of a 100 msg/s run: a closed-loop view
    would see one slow sample; the intended-time view charges messages
    3..52 (500, 490, ..., 10 ms), because each should have gone out earlier."""
    clock = FakeClock()
    tracker = OpenLoopTracker(warmup=0, clock=clock)

    async def send(i: int) -> None:
        if i == 3:
            clock.now += 500 * MS
        tracker.complete(i)

    result = await open_loop(send, tracker, count=100, rate_per_s=100.0, sleep=clock.sleep)
    lat = result.latency
    assert lat.count == 100
    assert close(lat.summary()["max"], 500.0)
    # Sorted latencies: 50 at ~0, then 10, 20, ..., 500 ms.
    assert lat.percentile_ms(50.0) < 0.001
    assert close(lat.percentile_ms(51.0), 10.0)
    assert close(lat.percentile_ms(75.0), 250.0)
    assert close(lat.percentile_ms(99.0), 490.0)
    # The sender's own lateness is recorded too: message 4 went out 490 ms late.
    assert close(result.sender_lateness.summary()["max"], 490.0)
    # Completion minus *actual* send (coordinated omission) would have shown one slow sample.
    assert sum(1 for p in range(1, 101) if lat.percentile_ms(p) >= 10.0) == 50


async def test_lost_messages_are_reported_as_missing() -> None:
    clock = FakeClock()
    tracker = OpenLoopTracker(warmup=0, clock=clock)

    async def send(i: int) -> None:
        if i % 5:
            tracker.complete(i)

    result = await open_loop(
        send, tracker, count=20, rate_per_s=1_000.0, drain_timeout_s=0.01, sleep=clock.sleep
    )
    assert result.missing == 4 and result.completed == 16
    assert result.latency.count == 16


def test_tracker_ignores_duplicates_and_unknown_messages() -> None:
    clock = FakeClock()
    tracker = OpenLoopTracker(warmup=0, clock=clock)
    tracker.intended[0] = clock.now
    clock.now += 3 * MS
    tracker.complete(0)
    tracker.complete(0)  # a redelivery
    tracker.complete(7)  # never sent by this run
    assert tracker.latency.count == 1
    assert close(tracker.latency.summary()["p50"], 3.0)
