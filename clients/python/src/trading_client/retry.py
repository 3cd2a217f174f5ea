"""When a failed call is sent again, and after how long (tenacity).

* UNAVAILABLE is retried for every RPC: reads are safe to repeat, and every
  mutating RPC carries an idempotency key that stays the same across the
  attempts, so the edge answers a repeat with the first reply. The public
  mutating RPCs (Login, RefreshToken) cannot carry one (the edge scopes keys
  to a caller) and are never repeated: a repeated RefreshToken would present
  a consumed refresh token, which the platform treats as theft.
* RESOURCE_EXHAUSTED is retried only when the server said when
  (google.rpc.RetryInfo), after exactly that delay, if it is no longer than
  :attr:`RetryPolicy.max_retry_after` (else the caller gets the error with
  ``retry_after`` and decides).
* UNAUTHENTICATED with a login credential is retried once, at once, after
  the client renewed its token (the access token was revoked or expired early).
* Everything else is final. No attempt starts after the call's deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, wait_exponential_jitter

from trading_client.errors import ResourceExhausted, Unauthenticated, Unavailable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one client. ``RetryPolicy(max_attempts=1)`` turns them off."""

    max_attempts: int = 4
    # Exponential backoff between attempts after UNAVAILABLE: initial, doubling, capped, plus jitter.
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    # Longest RetryInfo delay waited for automatically.
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("backoff must satisfy 0 <= initial_backoff <= max_backoff")

    def retryable(self, error: BaseException) -> bool:
        """May a call that failed with ``error`` be sent again (deadline and attempts aside)?"""
        if isinstance(error, Unavailable):
            return True
        if isinstance(error, ResourceExhausted):
            return error.retry_after is not None and error.retry_after <= self.max_retry_after
        return False


class CallRetry:
    """The retry decisions of one call, as tenacity's ``retry``/``wait``/``stop``.

    ``deadline`` is on ``clock``'s time line (None: no deadline);
    ``renewable_auth`` says whether an UNAUTHENTICATED answer is worth one
    more attempt with a renewed token; a call that is not ``repeatable`` (a
    mutating call without an idempotency key) is never sent twice."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        deadline: float | None,
        clock: Callable[[], float],
        renewable_auth: bool,
        repeatable: bool = True,
    ) -> None:
        self.policy = policy
        self._repeatable = repeatable
        self.deadline = deadline
        self._clock = clock
        self._renewable_auth = renewable_auth
        self._auth_renewed = False
        self._backoff = wait_exponential_jitter(
            multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.initial_backoff
        )

    @staticmethod
    def _error(state: RetryCallState) -> BaseException | None:
        return state.outcome.exception() if state.outcome is not None else None

    def retry(self, state: RetryCallState) -> bool:
        if not self._repeatable:
            return False
        error = self._error(state)
        if isinstance(error, Unauthenticated):
            if not self._renewable_auth or self._auth_renewed:
                return False
            self._auth_renewed = True
            return True
        return error is not None and self.policy.retryable(error)

    def wait(self, state: RetryCallState) -> float:
        error = self._error(state)
        if isinstance(error, Unauthenticated):
            return 0.0
        if isinstance(error, ResourceExhausted) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.policy.max_attempts:
            return True
        upcoming = state.upcoming_sleep or 0.0
        return self.deadline is not None and self._clock() + upcoming >= self.deadline

    def remaining(self) -> float | None:
        """Seconds left for the next attempt (None: unlimited; may be <= 0)."""
        return None if self.deadline is None else self.deadline - self._clock()

    def tenacity_args(self, sleep: Callable[[float], Any]) -> dict[str, Any]:
        """Keyword arguments of ``tenacity.Retrying``/``AsyncRetrying`` for this call."""
        return {"retry": self.retry, "wait": self.wait, "stop": self.stop, "sleep": sleep, "reraise": True}


def deadline_after(timeout: float | None, clock: Callable[[], float]) -> float | None:
    """The absolute deadline ``timeout`` seconds from now (None for no timeout)."""
    if timeout is None or math.isinf(timeout):
        return None
    return clock() + timeout
