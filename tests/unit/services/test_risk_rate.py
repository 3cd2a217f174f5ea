"""The order-rate window by submission time (services.risk.domain), pure.

Replays what the issue describes: orders sent slowly that queued up during a
stall reach risk in one burst. Each arrival is admitted (or not) exactly as
the CHECK script does it: the instant from rate_instant_us, admitted when
rate_admits, and then counted at that instant.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.risk.domain import (
    RATE_WINDOW_US,
    SubmissionTimeBound,
    orders_near,
    rate_admits,
    rate_instant_us,
)

BOUND = SubmissionTimeBound(max_back_s=5.0, max_ahead_s=1.0)
LIMIT = 50
SECOND = 1_000_000


def admit_all(arrivals: Sequence[tuple[int | None, int]], limit: int = LIMIT) -> list[bool]:
    """(submitted_us, arrival_us) in arrival order -> admitted, like the service."""
    counted: list[int] = []
    admitted: list[bool] = []
    for submitted, arrival in arrivals:
        instant = rate_instant_us(submitted, arrival, BOUND)
        ok = rate_admits(counted, instant, limit)
        if ok:
            counted.append(instant)
        admitted.append(ok)
    return admitted


def test_orders_sent_slowly_pass_although_they_arrive_in_one_burst() -> None:
    # 100 orders sent at 40/s (under the limit of 50) over 2.5 s; a stall
    # holds them all and they reach risk within 10 ms.
    t0 = 1_000 * SECOND
    sent = [t0 + i * SECOND // 40 for i in range(100)]
    arrival = sent[-1] + 200_000
    burst = [(s, arrival + i * 100) for i, s in enumerate(sent)]
    assert all(admit_all(burst))
    # Measured at arrival (no submission time), the same burst is cut at the limit.
    assert admit_all([(None, a) for _, a in burst]).count(True) == LIMIT


def test_a_real_burst_is_still_refused() -> None:
    t0 = 1_000 * SECOND
    burst = [(t0 + i * 100, t0 + i * 100 + 500) for i in range(80)]
    assert admit_all(burst) == [True] * LIMIT + [False] * 30


def test_late_orders_with_early_times_cannot_overfill_a_window() -> None:
    # 50 orders already counted in [t0+0.5 s, t0+1 s); 50 more arrive late,
    # claiming [t0, t0+0.5 s): every one-second window around them is full.
    t0 = 1_000 * SECOND
    first = [(t0 + SECOND // 2 + i * 10_000, t0 + SECOND + i) for i in range(LIMIT)]
    late = [(t0 + i * 10_000, t0 + SECOND + 1_000 + i) for i in range(LIMIT)]
    admitted = admit_all(first + late)
    assert admitted[:LIMIT] == [True] * LIMIT
    assert not any(admitted[LIMIT:])


def test_backdating_beyond_the_bound_counts_at_arrival() -> None:
    now = 1_000 * SECOND
    assert rate_instant_us(now - 4 * SECOND, now, BOUND) == now - 4 * SECOND
    assert rate_instant_us(now - 5 * SECOND, now, BOUND) == now - 5 * SECOND  # on the edge: believed
    assert rate_instant_us(now - 5 * SECOND - 1, now, BOUND) == now
    assert rate_instant_us(now + SECOND, now, BOUND) == now + SECOND
    assert rate_instant_us(now + SECOND + 1, now, BOUND) == now  # from the future: clock or forgery
    assert rate_instant_us(None, now, BOUND) == now
    assert rate_instant_us(0, now, BOUND) == now  # an unset Timestamp


def test_a_backdating_client_gains_one_bounded_burst_not_a_rate() -> None:
    # Claiming times spread over the believable span (5 s back, 1 s ahead)
    # admits at most limit x 6 (+1 on the closed edge) orders once; right
    # after that the window at "now" is full.
    now = 1_000 * SECOND
    spread = [(now - 5 * SECOND + i * 20_000, now + i) for i in range(400)]
    admitted = admit_all(spread)
    assert admitted.count(True) <= LIMIT * 6 + 1
    later = admit_all(spread + [(None, now + 1_000 + i) for i in range(10)])
    assert not any(later[-10:])


def test_slow_orders_arriving_shuffled_pass() -> None:
    # Concurrent checks reach risk in any order: 4/s under a limit of 5 stays
    # admitted whatever the arrival order (no one-second window holds 5).
    t0 = 1_000 * SECOND
    sent = [t0 + i * SECOND // 4 for i in range(20)]
    shuffled = sent[1::2] + sent[::2][::-1]
    arrival = sent[-1] + 100_000
    assert all(admit_all([(s, arrival + i) for i, s in enumerate(shuffled)], limit=5))


def test_orders_near_is_the_busiest_window_holding_the_order() -> None:
    t = 10 * SECOND
    w = RATE_WINDOW_US
    # In order: the plain sliding window (the second before, the edge excluded).
    assert orders_near([t - w, t - w + 1, t - 1, t], t) == 3
    # Either side, but only what fits in one window with the order.
    assert orders_near([t - w + 1, t + w - 1], t) == 1
    assert orders_near([t - w // 2, t + w // 4, t + w // 2 - 1, t + w // 2], t) == 3
    assert orders_near([], t) == 0
