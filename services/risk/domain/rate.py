"""The order-rate window: how many orders a tenant sent in one second, counted
at their submission time within a bound. No I/O, no clock."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# The order-rate window is one second, counted in microseconds (Redis scores).
RATE_WINDOW_US: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class SubmissionTimeBound:
    """How far a claimed submission time may be from risk's clock and still be used.

    The rate limits how fast the *trader* sends orders, so it is measured at
    the submission time, not at the arrival at risk: after a stall, checks
    that queued up arrive together although they were sent slowly. But the
    time comes from the request (execution sets it; a direct CheckOrder
    caller could set anything), so it is only believed within this bound:
    back far enough to cover a stall of the check path (execution gives up
    on risk after ~1 s, direct callers after their own deadline), ahead only
    by clock skew. Outside it the arrival time is used. A client forging
    times therefore gains at most about ``max_orders_per_second x
    (max_back_s + max_ahead_s)`` orders at once, never a higher sustained rate.
    """

    max_back_s: float = 5.0
    max_ahead_s: float = 1.0


def rate_instant_us(submitted_us: int | None, arrival_us: int, bound: SubmissionTimeBound) -> int:
    """The instant (us) an order counts at in the rate window: its submission
    time when known and within `bound` of `arrival_us`, else its arrival."""
    if submitted_us is None or submitted_us <= 0:
        return arrival_us
    if arrival_us - bound.max_back_s * 1e6 <= submitted_us <= arrival_us + bound.max_ahead_s * 1e6:
        return submitted_us
    return arrival_us


def orders_near(counted_us: Iterable[int], instant_us: int) -> int:
    """The most counted orders in any one-second window that also holds `instant_us`.

    Submission times arrive out of order, so a plain count of the second
    before `instant_us` is not enough: a late order with an early time could
    overfill a window that later orders already filled. A window here is a
    span [start, start + 1 s); the busiest one holding the new order starts
    at one of the counted orders of the second before it, or at the order
    itself. In order (the normal case) nothing lies ahead and this is the
    plain sliding window. The CHECK script of the Redis adapter computes the same.
    """
    near = sorted(t for t in counted_us if instant_us - RATE_WINDOW_US < t < instant_us + RATE_WINDOW_US)
    starts = [t for t in near if t <= instant_us] + [instant_us]
    return max(bisect_left(near, a + RATE_WINDOW_US) - bisect_left(near, a) for a in starts)


def rate_admits(counted_us: Iterable[int], instant_us: int, max_per_second: int) -> bool:
    """True when an order counted at `instant_us` keeps the rate within the limit."""
    return orders_near(counted_us, instant_us) < max_per_second
