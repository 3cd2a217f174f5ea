"""Sample counts and data sizes of the two modes.

quick: for CI; proves every path produces numbers in well under two minutes.
Sample counts are far too small for a stable p99: its verdicts are indicative.
full: the real measurement (>= 10,000 samples where a sample is cheap).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Mode:
    name: str
    samples: int  # closed-loop samples of a cheap call (floors, RPCs, cache, PostgreSQL)
    warmup: int
    jwt_samples: int  # in-process CPU work: cheap, so more
    event_rate_per_s: float  # open-loop rate of the event delivery paths
    event_count: int  # messages per event path, warm-up included
    event_warmup: int  # the first messages of each event path, sent but not recorded
    ch_ticks: int  # synthetic ticks generated in ClickHouse
    ch_samples: int  # bar queries
    ch_scan_samples: int  # full-table aggregations
    api_samples: int  # closed-loop calls of the multi-process paths (gateway GET, PlaceOrder), per condition
    post_rate_per_s: float  # open-loop POST /v1/orders through the gateway (under the 50/s risk default)
    post_count: int
    hot_rates_per_s: tuple[float, ...]  # hot-path feed rates: 1,000 ticks/s, then lower
    hot_warmup_s: float  # strategy on, nothing recorded yet
    hot_seconds: float  # recorded part of the hot-path run
    throughput_rates: tuple[float, ...]  # feed rates tried, lowest first (0: as fast as the feed can)
    throughput_warmup_s: float
    throughput_window_s: float  # measured part of each step
    order_rates_per_s: tuple[float, ...]  # open-loop order placement rates tried, lowest first
    order_step_warmup_s: float  # the start of each order step, sent but not recorded
    order_step_s: float  # recorded part of each order step
    order_steps_down: int  # when the first order rate is not sustained: halvings tried

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


QUICK = Mode(
    name="quick",
    samples=300,
    warmup=50,
    jwt_samples=1_000,
    event_rate_per_s=1_000,
    event_count=400,
    event_warmup=100,
    ch_ticks=200_000,
    ch_samples=30,
    ch_scan_samples=3,
    # Per condition (idle, 1,000 ticks/s): the order and gateway paths run twice.
    api_samples=150,
    post_rate_per_s=40,
    post_count=80,
    hot_rates_per_s=(1_000, 250),
    hot_warmup_s=5,
    hot_seconds=6,
    throughput_rates=(2_000, 5_000),
    throughput_warmup_s=1.5,
    throughput_window_s=3,
    order_rates_per_s=(100, 300),
    order_step_warmup_s=0.3,
    order_step_s=1.5,
    order_steps_down=0,
)

FULL = Mode(
    name="full",
    samples=10_000,
    warmup=1_000,
    jwt_samples=20_000,
    event_rate_per_s=1_000,
    event_count=11_000,
    event_warmup=1_000,
    ch_ticks=10_000_000,
    ch_samples=500,
    ch_scan_samples=20,
    api_samples=3_000,
    post_rate_per_s=40,
    post_count=1_200,
    hot_rates_per_s=(1_000, 250, 100),
    hot_warmup_s=5,
    hot_seconds=30,
    throughput_rates=(1_000, 2_000, 3_000, 5_000, 8_000, 12_000, 20_000),
    throughput_window_s=5,
    throughput_warmup_s=2,
    order_rates_per_s=(100, 250, 500, 750, 1_000, 1_500, 2_000),
    order_step_warmup_s=1,
    order_step_s=5,
    order_steps_down=3,
)

MODES: dict[str, Mode] = {m.name: m for m in (QUICK, FULL)}
