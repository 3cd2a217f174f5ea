"""The breaker's state machine, on a fake clock (no sleeps)."""

from __future__ import annotations

import itertools

import pytest

from runtime.circuit_breaker import TRANSITIONS, BreakerEvent, BreakerState, CircuitBreaker


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
def transitions() -> list[tuple[BreakerState, BreakerState]]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, transitions: list[tuple[BreakerState, BreakerState]]) -> CircuitBreaker:
    # First open interval 0.25 s, doubling per failed probe up to 5 s.
    return CircuitBreaker(
        "risk",
        failure_threshold=3,
        reset_timeout_s=5.0,
        open_initial_s=0.25,
        clock=clock,
        on_state_change=lambda _name, old, new: transitions.append((old, new)),
    )


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.allow()
        breaker.record_failure()


def fail_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Wait out the current open interval, send the probe, see it fail."""
    clock.advance(breaker.retry_after())
    assert breaker.allow()
    breaker.record_failure()


def test_every_state_and_event_has_a_catch_all_row() -> None:
    """The table is exhaustive: the last row of each (state, event) has no condition."""
    for state, event in itertools.product(BreakerState, BreakerEvent):
        rows = [r for r in TRANSITIONS if (r.state, r.event) == (state, event)]
        assert rows, (state, event)
        assert rows[-1].guard.__name__ == "_always", (state, event)


def test_opens_after_n_consecutive_failures(breaker: CircuitBreaker) -> None:
    states = []
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
        states.append(breaker.state)
    assert states == [BreakerState.CLOSED, BreakerState.CLOSED, BreakerState.OPEN]
    assert not breaker.allow()


def test_a_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2


def test_neutral_outcomes_change_nothing(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_neutral()
    breaker.record_failure()
    assert breaker.consecutive_failures == 2
    assert breaker.state is BreakerState.CLOSED


def test_open_refuses_for_a_short_interval_then_lets_one_probe_through(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(0.2)
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(0.05)
    clock.advance(0.05)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for its outcome
    assert not breaker.allow()


def test_successful_probe_closes_at_once(
    breaker: CircuitBreaker, clock: FakeClock, transitions: list[tuple[BreakerState, BreakerState]]
) -> None:
    trip(breaker)
    clock.advance(0.25)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()
    assert transitions == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    # Failures count from zero again.
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_failed_probes_back_off_doubling_up_to_the_cap(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    intervals = [breaker.open_interval_s]
    for _ in range(6):
        fail_probe(breaker, clock)  # one failure is enough in half-open
        assert breaker.state is BreakerState.OPEN
        assert not breaker.allow()
        intervals.append(breaker.open_interval_s)
    assert intervals == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    clock.advance(4.99)
    assert not breaker.allow()
    clock.advance(0.01)
    assert breaker.allow()


def test_closing_resets_the_backoff(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    fail_probe(breaker, clock)
    fail_probe(breaker, clock)
    assert breaker.open_interval_s == 1.0
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_success()
    trip(breaker)
    assert breaker.open_interval_s == 0.25
    clock.advance(0.25)
    assert breaker.allow()


def test_a_short_blip_ends_within_one_interval_of_the_recovery(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    """The issue's case: a 1.7 s outage. Callers keep calling every 10 ms; the
    breaker must close soon after the dependency is back, not seconds later."""
    start = clock.now
    down_until = start + 1.7
    closed_at = None
    while clock.now < start + 10:
        if breaker.allow():
            if clock.now < down_until:
                breaker.record_failure()
            else:
                breaker.record_success()
                if breaker.state is BreakerState.CLOSED and closed_at is None:
                    closed_at = clock.now
                    break
        clock.advance(0.01)
    assert closed_at is not None
    # Probes at +0.25, +0.75, +1.75 (intervals 0.25, 0.5, 1.0): closed 50 ms after recovery.
    assert closed_at - down_until < 0.1


def test_cancelled_probe_frees_the_slot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(0.25)
    assert breaker.allow()
    breaker.record_neutral()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_a_probe_that_never_reports_back_does_not_wedge_the_breaker(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(0.25)
    assert breaker.allow()
    clock.advance(4.0)
    assert not breaker.allow()
    assert breaker.retry_after() == 0.25  # the probe in flight answers sooner than that
    clock.advance(1.0)
    assert breaker.allow()


def test_late_outcomes_while_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """A failure of a call sent before the trip does not extend the interval; a
    success of one means the downstream is back, so the breaker closes."""
    trip(breaker)
    clock.advance(0.1)
    breaker.record_failure()
    assert not breaker.allow()  # still open, the interval unchanged:
    clock.advance(0.15)
    assert breaker.allow()
    breaker.record_failure()  # the probe
    breaker.record_success()  # a straggler answered
    assert breaker.state is BreakerState.CLOSED
    assert breaker.open_interval_s == 0.25


def test_initial_interval_never_exceeds_the_cap() -> None:
    assert CircuitBreaker("x", reset_timeout_s=0.1).open_initial_s == 0.1


@pytest.mark.parametrize(
    "kwargs", [{"failure_threshold": 0}, {"reset_timeout_s": 0.0}, {"open_initial_s": 0.0}]
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", **kwargs)  # type: ignore[arg-type]
