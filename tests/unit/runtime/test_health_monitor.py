"""The watchdog's rules on a hand-driven clock: failing past the threshold is
stuck, idle is not, progress clears it, transitions are logged once."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from runtime.health import HealthMonitor, stuck_reason


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def monitor(clock: FakeClock) -> HealthMonitor:
    return HealthMonitor(stuck_after_s=10.0, clock=clock)


def test_idle_component_is_never_stuck(monitor: HealthMonitor, clock: FakeClock) -> None:
    component = monitor.register("idle-consumer")
    clock.advance(3600)  # reported nothing for an hour: idle, not failing
    assert monitor.check() == []
    assert component.status().since_progress_s == 3600


def test_failing_turns_stuck_only_after_the_threshold(monitor: HealthMonitor, clock: FakeClock) -> None:
    component = monitor.register("kafka:fills")
    component.failing("fetch: broker down")
    clock.advance(9.9)
    component.failing("fetch: broker still down")  # repeated failures keep the first start
    assert monitor.check() == []
    clock.advance(0.2)
    [stuck] = monitor.check()
    assert stuck.name == "kafka:fills"
    assert stuck.reason == "fetch: broker still down"
    assert stuck.failing_for_s == pytest.approx(10.1)


def test_progress_clears_stuck_and_restarts_the_count(monitor: HealthMonitor, clock: FakeClock) -> None:
    component = monitor.register("relay")
    component.failing(ConnectionError("refused"))
    clock.advance(11)
    assert [s.reason for s in monitor.check()] == ["ConnectionError: refused"]
    component.progress()
    assert monitor.check() == []
    component.failing("again")
    clock.advance(5)
    assert monitor.check() == []  # a new failure streak starts from zero


def test_per_component_threshold_overrides_the_monitors(monitor: HealthMonitor, clock: FakeClock) -> None:
    quick = monitor.register("quick", stuck_after_s=1.0)
    slow = monitor.register("slow")
    quick.failing("x")
    slow.failing("y")
    clock.advance(2)
    assert [s.name for s in monitor.check()] == ["quick"]
    monitor.stuck_after_s = 1.5  # settings applied later reach components without their own threshold
    assert sorted(s.name for s in monitor.check()) == ["quick", "slow"]


def test_transitions_are_logged_once(
    monitor: HealthMonitor, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    component = monitor.register("nats:orders")
    component.failing("fetch failed")
    clock.advance(20)
    with caplog.at_level(logging.WARNING, logger="runtime.health"):
        for _ in range(5):
            monitor.check()
        component.progress()
        for _ in range(5):
            monitor.check()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("component stuck: nats:orders: fetch failed")
    assert messages[1] == "component recovered: nats:orders"


def test_names_are_unique_and_closed_components_do_not_count(
    monitor: HealthMonitor, clock: FakeClock
) -> None:
    first = monitor.register("group")
    second = monitor.register("group")
    assert (first.name, second.name) == ("group", "group#2")
    second.failing("x")
    clock.advance(30)
    assert len(monitor.check()) == 1
    second.close()
    assert monitor.check() == []
    assert [s.name for s in monitor.statuses()] == ["group"]


def test_metrics_follow_the_clock(monitor: HealthMonitor, clock: FakeClock) -> None:
    component = monitor.register("metrics-probe-component")
    component.failing("down")
    clock.advance(12)
    labels = {"component": "metrics-probe-component"}
    assert REGISTRY.get_sample_value("component_stuck", labels) == 1.0
    assert REGISTRY.get_sample_value("component_seconds_since_progress", labels) == 12.0
    component.progress()
    assert REGISTRY.get_sample_value("component_stuck", labels) == 0.0
    assert REGISTRY.get_sample_value("component_seconds_since_progress", labels) == 0.0
    component.close()
    assert REGISTRY.get_sample_value("component_stuck", labels) is None


def test_reason_is_printable_ascii_and_bounded(monitor: HealthMonitor, clock: FakeClock) -> None:
    component = monitor.register("ünïcode")
    component.failing("line one\nline two " + "x" * 1000)
    clock.advance(11)
    reason = stuck_reason(monitor.check())
    assert reason.startswith("stuck: ?n?code: line one?line two")
    assert len(reason) <= 300
    assert all(" " <= c <= "~" for c in reason)
