"""decision's vector batches: what arrived while a batch ran is the next
batch, in arrival order (so each symbol's items in order), a bounded queue
per symbol that sheds the oldest, failures contained. (They replaced the
per-symbol lanes: one pass per batch instead of one per vector.)"""

from __future__ import annotations

import asyncio

from opentelemetry import context as otel_context
from prometheus_client import REGISTRY

from services.decision.lanes import VectorBatches


def shed() -> float:
    return REGISTRY.get_sample_value("trading_decision_shed_vectors_total") or 0.0


def failures() -> float:
    return REGISTRY.get_sample_value("trading_decision_vector_failures_total") or 0.0


async def test_what_arrives_while_a_batch_runs_is_the_next_batch_and_the_oldest_waiting_is_shed() -> None:
    batches: list[list[str]] = []
    release = asyncio.Event()

    async def process(batch: list[tuple[str, otel_context.Context]]) -> None:
        batches.append([item for item, _ in batch])
        await release.wait()

    lanes: VectorBatches[str] = VectorBatches(process, max_waiting=2)
    before = shed()
    lanes.submit("AAA", "a1")
    await asyncio.sleep(0)  # a1 is the first batch, alone
    for item in ("a2", "a3", "a4"):  # a2 is shed: only two may wait per symbol
        lanes.submit("AAA", item)
    lanes.submit("BBB", "b1")  # another symbol waits in the same next batch
    await asyncio.sleep(0.01)
    assert batches == [["a1"]]
    release.set()
    await asyncio.sleep(0.01)
    await lanes.stop(timeout_s=1)
    assert batches == [["a1"], ["a3", "a4", "b1"]]
    assert shed() - before == 1


async def test_a_batch_keeps_the_arrival_order_across_symbols() -> None:
    seen: list[list[int]] = []

    async def process(batch: list[tuple[int, otel_context.Context]]) -> None:
        seen.append([item for item, _ in batch])

    lanes: VectorBatches[int] = VectorBatches(process)
    for i in range(6):
        lanes.submit("AAA" if i % 2 else "BBB", i)  # all at once: one batch, in arrival order
    await asyncio.sleep(0.01)
    await lanes.stop(timeout_s=1)
    assert seen == [[0, 1, 2, 3, 4, 5]]


async def test_a_failing_batch_is_contained_and_the_next_one_runs() -> None:
    seen: list[str] = []

    async def process(batch: list[tuple[str, otel_context.Context]]) -> None:
        if any(item == "bad" for item, _ in batch):
            raise RuntimeError("boom")
        seen.extend(item for item, _ in batch)

    lanes: VectorBatches[str] = VectorBatches(process)
    before = failures()
    lanes.submit("AAA", "bad")
    await asyncio.sleep(0.01)
    lanes.submit("AAA", "good")
    await asyncio.sleep(0.01)
    await lanes.stop(timeout_s=1)
    assert seen == ["good"] and failures() - before == 1
