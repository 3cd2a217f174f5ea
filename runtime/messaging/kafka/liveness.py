"""Is an empty Kafka poll healthy idleness or a broker that stopped answering?

aiokafka's ``getmany()`` does not raise when the broker is gone: its fetcher
retries in the background and every poll returns nothing, exactly as on an
idle topic. What tells them apart is whether fetches still get answers: the
consumer stamps each partition when a fetch response for it arrives without
error, empty or not (``last_poll_timestamp``), and forgets the group
coordinator when it cannot reach it.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer

# Fetches are answered within fetch_max_wait_ms (10-250 ms here) while the
# broker is up; no answer for this long means none is coming.
FETCH_ANSWER_STALE_S = 3.0


def fetch_trouble(consumer: AIOKafkaConsumer, stale_after_s: float = FETCH_ANSWER_STALE_S) -> str | None:
    """Why the consumer's last empty poll is not healthy idleness, or None."""
    # No public API says whether the group coordinator is known; without one
    # there are no heartbeats, commits or rebalances.
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "coordinator_id", 0) is None:
        return "group coordinator unreachable"
    now_ms = time.time() * 1000
    for tp in consumer.assignment():
        answered_ms = consumer.last_poll_timestamp(tp)
        if answered_ms is None:
            return f"no fetch answer yet for {tp.topic}/{tp.partition}"
        silent_s = (now_ms - answered_ms) / 1000
        if silent_s > stale_after_s:
            return f"no fetch answer for {tp.topic}/{tp.partition} for {silent_s:.0f}s"
    return None
