"""The analog model and its market memory, without servers: the state
embedding, the vote, the offline classifier, the memory's windows, outcomes
and batched writes (on an in-memory vector store), and the ensemble's
handling of the analog model (answers with its analogs, SKIPPED until the
memory holds k states, TIMEOUT when the search is slow or the memory busy)."""

from __future__ import annotations

import asyncio
import math
import pickle
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.vectors import MARKET, Neighbour, VectorRecord
from services.decision.domain import FEATURE_NAMES, ModelResult, Outcome, analog, embedding
from services.decision.domain.analog import AnalogClassifier, vote
from services.decision.inference import Ensemble
from services.decision.memory import MarketMemory, MemoryBusy, outcome_of
from services.decision.models import LoadedModel, ModelMetadata

VERSION = "v1:test"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class MemoryStore:
    """The vector port in a dict, exact cosine search (the ports' contract)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.records: dict[str, dict[str, VectorRecord]] = {}
        self.delay_s = delay_s
        self.upserts = 0
        self.fail = False

    @property
    def dimension(self) -> int:
        return embedding.DIMENSION

    async def upsert(self, scope: str, records: Sequence[VectorRecord]) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.upserts += 1
        for r in records:
            self.records.setdefault(scope, {})[r.id] = r

    async def search(
        self,
        scope: str,
        vector: Sequence[float],
        k: int,
        *,
        symbol: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[Neighbour]:
        await asyncio.sleep(self.delay_s)
        found = [
            Neighbour(r.id, r.symbol, r.at, r.payload, float(np.dot(vector, r.vector)))
            for r in self.records.get(scope, {}).values()
            if (symbol is None or r.symbol == symbol)
            and (start is None or r.at >= start)
            and (end is None or r.at < end)
        ]
        return sorted(found, key=lambda n: -n.similarity)[:k]

    async def delete_older_than(self, scope: str, before: datetime) -> int:
        old = [i for i, r in self.records.get(scope, {}).items() if r.at < before]
        for i in old:
            del self.records[scope][i]
        return len(old)

    async def count(self, scope: str) -> int:
        return len(self.records.get(scope, {}))

    async def close(self) -> None:
        pass


class Vector:
    """A feature vector of the contract's shape (the attributes decision reads)."""

    def __init__(self, symbol: str, sequence: int, mid: float, **changes: Any) -> None:
        self.symbol = symbol
        self.tick_sequence = sequence
        self.as_of = T0 + timedelta(seconds=sequence)
        self.mid_price = Decimal(str(mid))
        self.warmed_up = True
        self.feature_set_version = VERSION
        rng = np.random.default_rng(sequence)
        for name in FEATURE_NAMES:
            setattr(self, name, float(rng.normal(0, 1e-4)))
        self.rsi = 50.0 + float(rng.normal(0, 10))
        self.volatility = 1e-4 * (1 + sequence % 3)
        for k, v in changes.items():
            setattr(self, k, v)


def rows(n: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    # EMBEDDING_FEATURES: log_return, window_return, rsi, volatility, ema_crossover.
    return [
        [float(rng.normal(0, 1e-4)), float(rng.normal(0, 5e-4)), float(rng.uniform(20, 80)),
         1e-4 * (1 + i % 4), float(rng.normal(0, 1e-4))]
        for i in range(n)
    ]  # fmt: skip


# ---------------------------------------------------------------------------- embedding


def test_a_state_is_a_unit_vector_of_the_window_taken_every_stride() -> None:
    window = rows(embedding.SPAN)
    state = embedding.embed(window)
    assert len(state) == embedding.DIMENSION == 40
    assert math.fsum(x * x for x in state) == pytest.approx(1.0)
    # Only every STRIDE-th vector back from the newest is read.
    changed = [list(r) for r in window]
    changed[-2][0] += 1.0
    assert embedding.embed(changed) == state
    changed[-1 - embedding.STRIDE][0] += 1e-4
    assert embedding.embed(changed) != state
    # Older vectors than the span are not read.
    assert embedding.embed(rows(5, seed=9) + window) == state


def test_states_are_scale_free() -> None:
    """A market ten times as volatile in the same shape is the same state."""
    window = rows(embedding.SPAN, seed=3)
    scaled = [[r[0] * 10, r[1] * 10, r[2], r[3] * 10, r[4] * 10] for r in window]
    assert embedding.embed(scaled) == pytest.approx(embedding.embed(window), abs=1e-9)


def test_a_short_window_repeats_its_oldest_vector_and_series_skip_cold_vectors() -> None:
    one = rows(1)
    assert embedding.embed(one) == embedding.embed(one * embedding.SPAN)
    series = embedding.series_embeddings([None, *rows(3), None])
    assert series[0] is None and series[4] is None
    assert series[3] == embedding.embed(rows(3))
    with pytest.raises(ValueError):
        embedding.embed([])
    with pytest.raises(ValueError, match="NaN"):
        embedding.embed([[math.nan, 0.0, 50.0, 1e-4, 0.0]])


def test_state_ids_name_the_vector() -> None:
    a = embedding.state_id("BTC-USD", VERSION, 7, 1_000)
    assert a == embedding.state_id("BTC-USD", VERSION, 7, 1_000)
    assert a != embedding.state_id("BTC-USD", VERSION, 7, 2_000)
    assert a != embedding.state_id("ETH-USD", VERSION, 7, 1_000)


# ---------------------------------------------------------------------------- vote and classifier


def test_the_vote_is_the_smoothed_share_of_rises_and_ignores_flat_outcomes() -> None:
    assert vote([analog.UP] * 3 + [analog.DOWN]) == pytest.approx(4 / 6)
    assert vote([analog.UP, analog.FLAT, analog.FLAT]) == pytest.approx(2 / 3)
    assert vote([]) == 0.5
    up, move = outcome_of(100.0, 101.0)
    assert up == analog.UP and move == pytest.approx(math.log(1.01) * 1e4)
    assert outcome_of(100.0, 99.0)[0] == analog.DOWN and outcome_of(100.0, 100.0) == (analog.FLAT, 0.0)


def test_the_offline_classifier_is_an_exact_nearest_neighbour_vote_and_saves_no_memory() -> None:
    rng = np.random.default_rng(1)
    memory = rng.standard_normal((300, embedding.DIMENSION))
    memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    labels = rng.integers(0, 2, 300)
    model = AnalogClassifier(k=7).fit(memory, labels)
    queries = memory[:20] + 0.01 * rng.standard_normal((20, embedding.DIMENSION))
    proba = model.predict_proba(queries)[:, 1]
    for q, p in zip(queries, proba, strict=True):
        nearest = np.argsort(-(memory @ q))[:7]
        assert p == pytest.approx(vote(analog.UP if labels[i] else analog.DOWN for i in nearest))
    saved = pickle.loads(pickle.dumps(model))
    assert saved.k == 7 and saved._memory is None
    with pytest.raises(RuntimeError, match="vector store"):
        saved.predict_proba(queries)


# ---------------------------------------------------------------------------- the memory


async def test_states_are_written_once_their_outcome_is_known_horizon_ticks_later() -> None:
    store = MemoryStore()
    memory = MarketMemory(store, horizon=3, feature_set_version=VERSION, flush_s=3600)
    mids = [100.0, 101.0, 102.0, 103.0, 102.0, 102.0, 102.0]
    states = [memory.observe(Vector("AAA", i + 1, m)) for i, m in enumerate(mids)]
    assert all(s is not None for s in states)
    assert memory.current("AAA") == states[-1] and memory.current("BBB") is None
    await memory.flush()
    stored = store.records[MARKET]
    # Ticks 1-4 have an outcome (their tick 3 later came); 5-7 wait.
    assert sorted(int(r.payload["tick_sequence"] or 0) for r in stored.values()) == [1, 2, 3, 4]
    by_seq = {r.payload["tick_sequence"]: r for r in stored.values()}
    assert [by_seq[s].payload["outcome"] for s in (1, 2, 3, 4)] == [
        analog.UP, analog.UP, analog.FLAT, analog.DOWN,
    ]  # fmt: skip
    assert by_seq[1].payload["move_bps"] == pytest.approx(math.log(103 / 100) * 1e4, abs=1e-3)
    first = states[0]
    assert first is not None and by_seq[1].id == first.id and list(by_seq[1].vector) == first.embedding
    assert by_seq[1].payload["horizon_ticks"] == 3
    assert by_seq[1].payload["embedding"] == embedding.EMBEDDING_VERSION


async def test_duplicates_cold_vectors_other_feature_sets_and_restarted_feeds() -> None:
    store = MemoryStore()
    memory = MarketMemory(store, horizon=2, feature_set_version=VERSION, flush_s=3600)
    first = memory.observe(Vector("AAA", 10, 100.0))
    assert memory.observe(Vector("AAA", 10, 100.0)) == first  # the same vector again
    assert memory.observe(Vector("AAA", 11, 100.5, warmed_up=False)) is None
    assert memory.observe(Vector("AAA", 12, 101.0, feature_set_version="v0:old")) is None
    # Tick 12 resolved tick 10 even though it makes no state of its own.
    await memory.flush()
    assert [r.payload["tick_sequence"] for r in store.records[MARKET].values()] == [10]
    # The feed restarted: what waited is given up, the window starts again.
    memory.observe(Vector("AAA", 13, 101.0))
    memory.observe(Vector("AAA", 1, 50.0))
    memory.observe(Vector("AAA", 3, 51.0))
    await memory.flush()
    assert sorted(int(r.payload["tick_sequence"] or 0) for r in store.records[MARKET].values()) == [1, 10]


async def test_writes_are_batched_retried_and_flushed_at_stop() -> None:
    store = MemoryStore()
    memory = MarketMemory(store, horizon=1, batch=4, flush_s=3600, max_attempts=2)
    memory.start()
    try:
        for i in range(1, 6):  # 4 resolved states: one full batch, written at once
            memory.observe(Vector("AAA", i, 100.0 + i))
        for _ in range(50):
            if store.upserts:
                break
            await asyncio.sleep(0.01)
        assert store.upserts == 1 and len(store.records[MARKET]) == 4
        store.fail = True
        memory.observe(Vector("AAA", 6, 100.0))
        assert not await memory.flush()  # kept for a retry
        store.fail = False
    finally:
        await memory.stop()
    assert len(store.records[MARKET]) == 5


async def test_lookups_beyond_the_limit_are_refused_at_once() -> None:
    store = MemoryStore(delay_s=0.2)
    memory = MarketMemory(store, horizon=1, max_lookups=1)
    state = memory.observe(Vector("AAA", 1, 100.0))
    assert state is not None
    first = asyncio.create_task(memory.similar(state, 3))
    await asyncio.sleep(0.01)
    with pytest.raises(MemoryBusy):
        await memory.similar(state, 3)
    assert await first == []


# ---------------------------------------------------------------------------- in the ensemble


def analog_model(k: int) -> LoadedModel:
    meta = ModelMetadata(
        model_id="analog-knn",
        kind=analog.KIND,
        version="2026-12-01.1",
        trained_at="2026-12-01T00:00:00+00:00",
        feature_names=list(embedding.EMBEDDING_FEATURES),
        feature_set_version=VERSION,
        training_samples=1,
        metrics={},
        artifact_sha256="",
    )
    return LoadedModel(meta, AnalogClassifier(k=k), Path("/nonexistent"))


async def remembered(store: MemoryStore, outcomes: Sequence[int]) -> MarketMemory:
    """A memory whose store holds states with these outcomes, near state 1 of symbol AAA."""
    memory = MarketMemory(store, horizon=1)
    query = memory.observe(Vector("AAA", 1, 100.0))
    assert query is not None
    rng = np.random.default_rng(2)
    records = []
    for i, outcome in enumerate(outcomes):
        v = np.asarray(query.embedding) + 0.05 * (i + 1) * rng.standard_normal(embedding.DIMENSION)
        v /= np.linalg.norm(v)
        records.append(
            VectorRecord(f"00000000-0000-4000-8000-{i:012d}", "BBB", T0, list(v), {"outcome": outcome})
        )
    await store.upsert(MARKET, records)
    return memory


async def test_the_analog_model_votes_with_its_nearest_states_and_names_them() -> None:
    store = MemoryStore()
    memory = await remembered(store, [analog.UP, analog.UP, analog.DOWN, analog.DOWN, analog.DOWN])
    ensemble = Ensemble({"analog-knn": analog_model(3)}, budget_s=1.0, memory=memory)
    vector = Vector("AAA", 2, 100.0)
    state = memory.observe(vector)
    results = await ensemble.evaluate(vector, ["analog-knn"], state=state)
    r = results["analog-knn"]
    assert r.outcome is Outcome.OK, r
    assert state is not None
    expected = await store.search(MARKET, state.embedding, 3)
    assert r.analogs == tuple(n.id for n in expected)
    outcomes = [int(n.payload["outcome"] or 0) for n in expected]
    assert r.score == pytest.approx(2 * vote(outcomes) - 1)
    ensemble.close()


async def test_the_analog_model_is_skipped_until_the_memory_holds_k_states_or_without_a_state() -> None:
    store = MemoryStore()
    memory = await remembered(store, [analog.UP, analog.DOWN])
    ensemble = Ensemble({"analog-knn": analog_model(3)}, budget_s=1.0, memory=memory)
    vector = Vector("AAA", 2, 100.0)
    few = (await ensemble.evaluate(vector, ["analog-knn"], state=memory.observe(vector)))["analog-knn"]
    assert few.outcome is Outcome.SKIPPED and "2 of the 3" in few.error
    cold = (await ensemble.evaluate(vector, ["analog-knn"], state=None))["analog-knn"]
    assert cold.outcome is Outcome.SKIPPED and "no market state" in cold.error
    alone = Ensemble({"analog-knn": analog_model(3)}, budget_s=1.0)
    none = (await alone.evaluate(vector, ["analog-knn"], state=memory.observe(vector)))["analog-knn"]
    assert none.outcome is Outcome.SKIPPED and "no market memory" in none.error


async def test_a_slow_search_answers_timeout_within_the_budget_and_a_busy_memory_at_once() -> None:
    store = MemoryStore(delay_s=0.5)
    memory = await remembered(store, [analog.UP] * 5)
    ensemble = Ensemble({"analog-knn": analog_model(3)}, budget_s=0.05, memory=memory)
    vector = Vector("AAA", 2, 100.0)
    state = memory.observe(vector)
    started = asyncio.get_running_loop().time()
    slow = (await ensemble.evaluate(vector, ["analog-knn"], state=state))["analog-knn"]
    assert slow.outcome is Outcome.TIMEOUT and asyncio.get_running_loop().time() - started < 0.3
    busy_memory = replace_limit(memory, 0)
    busy = Ensemble({"analog-knn": analog_model(3)}, budget_s=1.0, memory=busy_memory)
    refused = (await busy.evaluate(vector, ["analog-knn"], state=state))["analog-knn"]
    assert refused.outcome is Outcome.TIMEOUT and "in flight" in refused.error


def replace_limit(memory: MarketMemory, max_lookups: int) -> MarketMemory:
    memory._max_lookups = max_lookups
    return memory


def test_model_results_carry_no_analogs_by_default() -> None:
    r = ModelResult("m", "v", Outcome.OK, score=0.1)
    assert r.analogs == () and replace(r, analogs=("a",)).analogs == ("a",)
