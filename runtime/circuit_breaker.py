"""A consecutive-failure circuit breaker with half-open probing, one per downstream target.

Written here rather than taken from a library: pybreaker's async support goes
through Tornado, aiobreaker is unmaintained since 2021, and purgatory routes
every call through a unit of work and a message bus (tens of microseconds of
awaits on the hot path) with a clock that tests cannot inject. This state
machine is synchronous (one event loop, no locks, no awaits) and takes a
``clock`` so its tests need no sleeps.

The whole behaviour is the table :data:`TRANSITIONS` below; in words:

  CLOSED     calls pass; ``failure_threshold`` consecutive failures -> OPEN.
  OPEN       calls are refused (the client raises UNAVAILABLE without touching
             the network) for the current open interval; then the next call
             goes out as the probe -> HALF_OPEN.
  HALF_OPEN  the one probe is out, other calls are refused; its success ->
             CLOSED at once, its failure -> OPEN for twice the last interval.

Why the open interval starts short and backs off (``open_initial_s`` doubling
up to ``reset_timeout_s``) instead of one fixed cool-down: with a fixed 5 s
cool-down a 1.7 s database blip kept the gateway failing for seconds after
the database was back. Probing early closes the breaker within one short
interval of the dependency's return, while the doubling keeps a long outage
down to one probe per ``reset_timeout_s``. The lag after recovery is at most
the last interval, i.e. never more than the outage itself (or the cap).

What counts as a failure is the caller's decision (see ``grpc_client``):
only outcomes that say "the downstream is unwell" trip it, never a bad request.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(enum.Enum):
    CALL = "call"  # a call asks to go out (allow())
    SUCCESS = "success"  # the downstream answered
    FAILURE = "failure"  # the downstream looked unwell
    NEUTRAL = "neutral"  # the call ended without news (e.g. the caller cancelled)


StateListener = Callable[[str, BreakerState, BreakerState], None]
Guard = Callable[["CircuitBreaker", float], bool]


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the state table: in ``state`` on ``event``, if ``guard(breaker, now)``
    holds, go to ``target``; for a CALL, ``admit`` says whether the call goes out."""

    state: BreakerState
    event: BreakerEvent
    guard: Guard
    target: BreakerState
    admit: bool = False


def _always(_b: CircuitBreaker, _now: float) -> bool:
    return True


def _threshold_reached(b: CircuitBreaker, _now: float) -> bool:
    return b._failures >= b.failure_threshold


def _open_interval_over(b: CircuitBreaker, now: float) -> bool:
    return now - b._opened_at >= b._open_interval_s


def _probe_slot_free(b: CircuitBreaker, now: float) -> bool:
    # A probe whose caller vanished without reporting frees the slot after the
    # longest open interval, so the breaker can never wedge half-open.
    started = b._probe_started_at
    return started is None or now - started >= b.reset_timeout_s


_C, _O, _H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
_CALL, _OK, _FAIL = BreakerEvent.CALL, BreakerEvent.SUCCESS, BreakerEvent.FAILURE
_NEUTRAL = BreakerEvent.NEUTRAL

# The state machine. Rows are tried in order; the first whose guard holds wins.
# Entering OPEN from CLOSED starts the interval at open_initial_s, from
# HALF_OPEN doubles it (capped); entering CLOSED resets counters and interval.
TRANSITIONS: Final[tuple[Transition, ...]] = (
    #          state event    guard                -> target  admit
    Transition(_C, _CALL,    _always,              _C, admit=True),
    Transition(_C, _OK,      _always,              _C),
    Transition(_C, _FAIL,    _threshold_reached,   _O),
    Transition(_C, _FAIL,    _always,              _C),
    Transition(_C, _NEUTRAL, _always,              _C),
    # This call is the probe.
    Transition(_O, _CALL,    _open_interval_over,  _H, admit=True),
    Transition(_O, _CALL,    _always,              _O, admit=False),
    # A call sent before the trip answered: the downstream is back.
    Transition(_O, _OK,      _always,              _C),
    # A straggler sent before the trip failed: nothing new, keep the interval.
    Transition(_O, _FAIL,    _always,              _O),
    Transition(_O, _NEUTRAL, _always,              _O),
    Transition(_H, _CALL,    _probe_slot_free,     _H, admit=True),
    Transition(_H, _CALL,    _always,              _H, admit=False),
    Transition(_H, _OK,      _always,              _C),
    Transition(_H, _FAIL,    _always,              _O),
    Transition(_H, _NEUTRAL, _always,              _H),
)  # fmt: skip

_RULES: Final[dict[tuple[BreakerState, BreakerEvent], tuple[Transition, ...]]] = {}
for _row in TRANSITIONS:
    _RULES.setdefault((_row.state, _row.event), ())
    _RULES[(_row.state, _row.event)] += (_row,)


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open probe and backed-off open intervals."""

    __slots__ = (
        "_clock",
        "_failures",
        "_listener",
        "_open_interval_s",
        "_opened_at",
        "_probe_started_at",
        "_state",
        "failure_threshold",
        "name",
        "open_initial_s",
        "reset_timeout_s",
    )

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: StateListener | None = None,
        open_initial_s: float | None = None,
    ) -> None:
        """``reset_timeout_s`` is the longest the breaker stays open between
        probes; ``open_initial_s`` (default: 0.25 s, at most ``reset_timeout_s``)
        the first open interval after tripping."""
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_timeout_s <= 0:
            raise ValueError("reset_timeout_s must be > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        initial = 0.25 if open_initial_s is None else open_initial_s
        if initial <= 0:
            raise ValueError("open_initial_s must be > 0")
        self.open_initial_s = min(initial, reset_timeout_s)
        self._clock = clock
        self._listener = on_state_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._open_interval_s = self.open_initial_s
        # Start time of the half-open probe in flight, None when no probe runs.
        self._probe_started_at: float | None = None

    @property
    def state(self) -> BreakerState:
        """The state as of now (an OPEN breaker past its interval reads HALF_OPEN)."""
        if self._state is BreakerState.OPEN and _open_interval_over(self, self._clock()):
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def open_interval_s(self) -> float:
        """The current (or next) open interval: grows with each failed probe."""
        return self._open_interval_s

    def retry_after(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now);
        with a probe in flight, the current interval (the probe answers sooner)."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self._open_interval_s - self._clock())
        if self._state is BreakerState.HALF_OPEN:
            return self._open_interval_s if self._probe_started_at is not None else 0.0
        return 0.0

    def allow(self) -> bool:
        """May a call go out now? A True answer outside CLOSED reserves the one
        probe slot: the caller must then report the outcome with one of the ``record_*``."""
        if self._state is BreakerState.CLOSED:
            return True  # the hot path: the table's (CLOSED, CALL) row, without the lookup
        now = self._clock()
        row = self._fire(BreakerEvent.CALL, now)
        if row.admit:
            self._probe_started_at = now
        return row.admit

    def record_success(self) -> None:
        """The downstream answered (including domain errors such as INVALID_ARGUMENT)."""
        self._failures = 0
        self._probe_started_at = None
        self._fire(BreakerEvent.SUCCESS, self._clock())

    def record_failure(self) -> None:
        """The downstream looked unwell (unavailable, timed out, internal error)."""
        self._probe_started_at = None
        if self._state is BreakerState.CLOSED:
            self._failures += 1
        self._fire(BreakerEvent.FAILURE, self._clock())

    def record_neutral(self) -> None:
        """The call ended without saying anything about the downstream (e.g. the
        caller cancelled): free the probe slot, change nothing else."""
        self._probe_started_at = None
        self._fire(BreakerEvent.NEUTRAL, self._clock())

    def _fire(self, event: BreakerEvent, now: float) -> Transition:
        for row in _RULES[(self._state, event)]:
            if row.guard(self, now):
                self._transition(row.target, now)
                return row
        raise AssertionError(f"no transition for {self._state.name} on {event.name}")  # pragma: no cover

    def _transition(self, new: BreakerState, now: float) -> None:
        old = self._state
        if new is BreakerState.OPEN and old is not BreakerState.OPEN:
            # From HALF_OPEN the probe failed: back off. From CLOSED: start short.
            if old is BreakerState.HALF_OPEN:
                self._open_interval_s = min(self._open_interval_s * 2, self.reset_timeout_s)
            else:
                self._open_interval_s = self.open_initial_s
            self._opened_at = now
        if old is new:
            return
        self._state = new
        if new is BreakerState.CLOSED:
            self._failures = 0
            self._open_interval_s = self.open_initial_s
        if self._listener is not None:
            self._listener(self.name, old, new)
