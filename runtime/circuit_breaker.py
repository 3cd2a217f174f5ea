"""A consecutive-failure circuit breaker, one per downstream target.

Written here rather than taken from a library: pybreaker's async support goes
through Tornado, aiobreaker is unmaintained since 2021, and purgatory routes
every call through a unit of work and a message bus (tens of microseconds of
awaits on the hot path) with a clock that tests cannot inject. This state
machine is ~100 lines, synchronous (one event loop, no locks, no awaits), and
takes a ``clock`` so its tests need no sleeps.

States:
  CLOSED     calls pass; ``failure_threshold`` consecutive failures -> OPEN.
  OPEN       calls are refused (the client raises UNAVAILABLE without touching
             the network) until ``reset_timeout_s`` has passed -> HALF_OPEN.
  HALF_OPEN  one probe call passes, the others are refused; its success ->
             CLOSED, its failure -> OPEN for another cool-down.

What counts as a failure is the caller's decision (see ``grpc_client``):
only outcomes that say "the downstream is unwell" trip it, never a bad request.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


StateListener = Callable[[str, BreakerState, BreakerState], None]


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open probe."""

    __slots__ = (
        "_clock",
        "_failures",
        "_listener",
        "_opened_at",
        "_probe_started_at",
        "_state",
        "failure_threshold",
        "name",
        "reset_timeout_s",
    )

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._listener = on_state_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        # Start time of the half-open probe in flight, None when no probe runs.
        self._probe_started_at: float | None = None

    @property
    def state(self) -> BreakerState:
        """The state as of now (an OPEN breaker past its cool-down reads HALF_OPEN)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_after(self) -> float:
        """Seconds until an OPEN breaker lets a probe through (0 when it would now)."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())
        if self._state is BreakerState.HALF_OPEN:
            return self.reset_timeout_s if self._probe_started_at is not None else 0.0
        return 0.0

    def allow(self) -> bool:
        """May a call go out now? In HALF_OPEN a True answer reserves the one probe
        slot: the caller must then report the outcome with one of the ``record_*``."""
        state = self._state
        if state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if state is BreakerState.OPEN:
            if now - self._opened_at < self.reset_timeout_s:
                return False
            self._transition(BreakerState.HALF_OPEN)
        # HALF_OPEN: one probe at a time. A probe that never reported back (its
        # caller vanished) frees the slot after one cool-down so we never wedge.
        if self._probe_started_at is not None and now - self._probe_started_at < self.reset_timeout_s:
            return False
        self._probe_started_at = now
        return True

    def record_success(self) -> None:
        """The downstream answered (including domain errors such as INVALID_ARGUMENT)."""
        self._failures = 0
        self._probe_started_at = None
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """The downstream looked unwell (unavailable, timed out, internal error)."""
        self._probe_started_at = None
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def record_neutral(self) -> None:
        """The call ended without saying anything about the downstream (e.g. the
        caller cancelled): free the probe slot, change nothing else."""
        self._probe_started_at = None

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        if new is BreakerState.CLOSED:
            self._failures = 0
        if self._listener is not None:
            self._listener(self.name, old, new)
