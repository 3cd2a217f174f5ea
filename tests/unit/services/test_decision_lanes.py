"""decision's per-symbol lanes: order within a symbol, concurrency across
symbols, a bounded queue that sheds the oldest, failures contained."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from services.decision.lanes import SymbolLanes


def shed() -> float:
    return REGISTRY.get_sample_value("trading_decision_shed_vectors_total") or 0.0


async def test_a_symbols_items_run_one_at_a_time_in_order_and_the_oldest_waiting_is_shed() -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def process(item: str) -> None:
        started.append(item)
        await release.wait()

    lanes: SymbolLanes[str] = SymbolLanes(process, max_waiting=2)
    before = shed()
    lanes.submit("AAA", "a1")
    await asyncio.sleep(0)  # a1 is in its lane
    for item in ("a2", "a3", "a4"):  # a2 is shed: only two may wait
        lanes.submit("AAA", item)
    lanes.submit("BBB", "b1")  # another symbol does not wait for AAA
    await asyncio.sleep(0.01)
    assert started == ["a1", "b1"]
    release.set()
    await asyncio.sleep(0.01)
    await lanes.stop(timeout_s=1)
    assert started == ["a1", "b1", "a3", "a4"]
    assert shed() - before == 1


async def test_items_of_a_symbol_keep_their_order_when_nothing_is_shed() -> None:
    seen: list[int] = []

    async def process(item: int) -> None:
        seen.append(item)
        await asyncio.sleep(0)

    lanes: SymbolLanes[int] = SymbolLanes(process)
    for i in range(5):
        lanes.submit("AAA", i)  # all at once: they wait, in order
    await asyncio.sleep(0.01)
    await lanes.stop(timeout_s=1)
    assert seen == [0, 1, 2, 3, 4]


async def test_a_failing_item_is_contained_and_the_lane_goes_on() -> None:
    seen: list[str] = []

    async def process(item: str) -> None:
        if item == "bad":
            raise RuntimeError("boom")
        seen.append(item)

    lanes: SymbolLanes[str] = SymbolLanes(process)
    lanes.submit("AAA", "bad")
    await asyncio.sleep(0.01)
    lanes.submit("AAA", "good")
    await asyncio.sleep(0.01)
    await lanes.stop(timeout_s=1)
    assert seen == ["good"]
