"""One test suite for the vector storage port (runtime.vectors), run against
each adapter: pgvector always (decision's ``market_states`` table on the
session's embedded PostgreSQL 18, row-level security, logged in as
decision's own role), and Weaviate when ``WEAVIATE_URL`` names a server
(``WEAVIATE_GRPC_PORT``, default 50051; a collection of its own per test,
deleted afterwards); skipped with that reason otherwise.

The table is shared with whatever else the session runs (decision's market
memory writes the market scope): tests use tenant scopes of their own, or
symbols of their own within the market scope."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import pytest_asyncio

from runtime.config import Settings
from runtime.storage.postgres import tenant_transaction
from runtime.vectors import MARKET, VectorRecord, VectorStore, open_vector_store
from runtime.vectors.pgvector import PgVectorStore

pytestmark = pytest.mark.integration

DIM = 40
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session", params=["pgvector", "weaviate"])
async def store(request: pytest.FixtureRequest, infra_settings: Settings) -> AsyncIterator[VectorStore]:
    if request.param == "pgvector":
        opened = await open_vector_store(infra_settings, "decision", table="market_states", dimension=DIM)
        try:
            yield opened
        finally:
            await opened.close()
        return
    url = os.environ.get("WEAVIATE_URL", "")
    if not url:
        pytest.skip("Weaviate adapter: set WEAVIATE_URL (and WEAVIATE_GRPC_PORT) to run it against a server")
    from runtime.vectors.weaviate import WeaviateVectorStore

    name = f"PortTest{uuid.uuid4().hex[:10]}"
    weaviate_store = await WeaviateVectorStore.connect(
        url, name=name, dimension=DIM, grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051"))
    )
    try:
        yield weaviate_store
    finally:
        await weaviate_store._client.collections.delete(name)
        await weaviate_store.close()


def scope() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def symbol() -> str:
    return f"V{uuid.uuid4().hex[:8].upper()}-USD"


def unit(rng: np.random.Generator) -> list[float]:
    v = rng.standard_normal(DIM)
    return list(v / np.linalg.norm(v))


def near(base: list[float], rng: np.random.Generator, noise: float) -> list[float]:
    v = np.asarray(base) + noise * rng.standard_normal(DIM)
    return list(v / np.linalg.norm(v))


def record(vector: list[float], sym: str, at: datetime, **payload: str | int | float | bool) -> VectorRecord:
    return VectorRecord(str(uuid.uuid4()), sym, at, vector, payload)


async def test_search_returns_the_nearest_first_with_cosine_similarity_and_the_stored_fields(
    store: VectorStore,
) -> None:
    rng = np.random.default_rng(1)
    s, sym = scope(), symbol()
    query = unit(rng)
    # Increasing noise around the query; ranked here by exact cosine.
    noisy = [near(query, rng, 0.1 * (i + 1)) for i in range(6)]
    noisy.sort(key=lambda v: -float(np.dot(query, v)))
    records = [record(v, sym, T0 + timedelta(seconds=i), rank=i) for i, v in enumerate(noisy)]
    far = [record(unit(rng), sym, T0, rank=99) for _ in range(20)]
    await store.upsert(s, records + far)
    found = await store.search(s, query, 4)
    assert [n.payload["rank"] for n in found] == [0, 1, 2, 3]
    assert [n.id for n in found] == [r.id for r in records[:4]]
    expected = [float(np.dot(query, r.vector)) for r in records[:4]]
    assert [n.similarity for n in found] == pytest.approx(expected, abs=1e-4)
    assert found[0].symbol == sym and found[0].at == T0
    # The same vector is similarity 1; k beyond what is stored returns everything, best first.
    again = await store.search(s, list(records[2].vector), 1)
    assert again[0].id == records[2].id and again[0].similarity == pytest.approx(1.0, abs=1e-4)
    everything = await store.search(s, query, 100)
    assert len(everything) == 26
    assert all(a.similarity >= b.similarity for a, b in itertools.pairwise(everything))
    assert await store.count(s) == 26


async def test_an_upsert_of_a_known_id_replaces_the_record(store: VectorStore) -> None:
    rng = np.random.default_rng(2)
    s, sym = scope(), symbol()
    first, second = unit(rng), unit(rng)
    rid = str(uuid.uuid4())
    await store.upsert(s, [VectorRecord(rid, sym, T0, first, {"outcome": 0})])
    await store.upsert(s, [VectorRecord(rid, sym, T0 + timedelta(seconds=5), second, {"outcome": 1})])
    assert await store.count(s) == 1
    (found,) = await store.search(s, second, 5)
    assert found.id == rid and found.payload == {"outcome": 1}
    assert found.similarity == pytest.approx(1.0, abs=1e-4) and found.at == T0 + timedelta(seconds=5)


async def test_filters_by_symbol_and_time_range(store: VectorStore) -> None:
    rng = np.random.default_rng(3)
    s, a, b = scope(), symbol(), symbol()
    query = unit(rng)
    recs = [
        record(near(query, rng, 0.1), sym, T0 + timedelta(minutes=m), m=m) for sym in (a, b) for m in range(5)
    ]
    await store.upsert(s, recs)
    only_a = await store.search(s, query, 50, symbol=a)
    assert len(only_a) == 5 and {n.symbol for n in only_a} == {a}
    window = await store.search(s, query, 50, start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=3))
    assert sorted(int(n.payload["m"] or 0) for n in window) == [1, 1, 2, 2]  # [start, end): minute 3 excluded
    both = await store.search(s, query, 50, symbol=b, start=T0 + timedelta(minutes=4))
    assert [(n.symbol, n.payload["m"]) for n in both] == [(b, 4)]
    # Market scope, this test's own symbol: the filter finds it among everything else there.
    await store.upsert(MARKET, [record(query, a, T0, m=-1)])
    (mine,) = await store.search(MARKET, query, 5, symbol=a)
    assert mine.payload == {"m": -1}


async def test_scopes_never_see_each_other(store: VectorStore) -> None:
    rng = np.random.default_rng(4)
    one, two, sym = scope(), scope(), symbol()
    vector = unit(rng)
    shared_id = str(uuid.uuid4())
    await store.upsert(one, [VectorRecord(shared_id, sym, T0, vector, {"owner": "one"})])
    await store.upsert(two, [VectorRecord(shared_id, sym, T0, vector, {"owner": "two"})])
    await store.upsert(two, [record(near(vector, rng, 0.01), sym, T0, owner="two")])
    # The same id in two scopes is two records.
    assert await store.count(one) == 1 and await store.count(two) == 2
    found_one = await store.search(one, vector, 10)
    assert [n.payload["owner"] for n in found_one] == ["one"]
    assert {n.payload["owner"] for n in await store.search(two, vector, 10)} == {"two"}
    # Market scope holds neither tenant's records.
    assert all(n.symbol != sym for n in await store.search(MARKET, vector, 50, symbol=sym))
    # Retention of one scope leaves the other untouched.
    assert await store.delete_older_than(one, T0 + timedelta(days=1)) == 1
    assert await store.count(one) == 0 and await store.count(two) == 2


async def test_delete_older_than_keeps_the_newer(store: VectorStore) -> None:
    rng = np.random.default_rng(5)
    s, sym = scope(), symbol()
    await store.upsert(s, [record(unit(rng), sym, T0 + timedelta(hours=h), h=h) for h in range(10)])
    assert await store.delete_older_than(s, T0 + timedelta(hours=4)) == 4
    left = await store.search(s, unit(rng), 50)
    assert sorted(int(n.payload["h"] or 0) for n in left) == [4, 5, 6, 7, 8, 9]
    assert await store.delete_older_than(s, T0) == 0


async def test_bad_input_is_refused_before_anything_is_written(store: VectorStore) -> None:
    rng = np.random.default_rng(6)
    s, sym = scope(), symbol()
    good = record(unit(rng), sym, T0)
    with pytest.raises(ValueError, match="dimensions"):
        await store.upsert(s, [good, record([1.0] * (DIM - 1), sym, T0)])
    with pytest.raises(ValueError):
        await store.upsert(s, [VectorRecord("not-a-uuid", sym, T0, unit(rng))])
    with pytest.raises(ValueError, match="timezone"):
        await store.upsert(s, [VectorRecord(str(uuid.uuid4()), sym, datetime(2026, 1, 1), unit(rng))])
    with pytest.raises(ValueError, match="NaN"):
        await store.search(s, [float("nan")] * DIM, 3)
    with pytest.raises(ValueError, match="scope"):
        await store.search("a tenant; DROP TABLE", unit(rng), 3)
    with pytest.raises(ValueError, match="k must"):
        await store.search(s, unit(rng), 0)
    assert await store.count(s) == 0


async def test_pgvector_row_level_security_and_the_hnsw_index(store: VectorStore) -> None:
    """Below the port: a tenant transaction sees no other tenant's rows even
    with SQL that forgets the scope, the service's role outside a tenant sees
    market rows only, and a market search is planned on the HNSW index."""
    if not isinstance(store, PgVectorStore):
        pytest.skip("pgvector only")
    rng = np.random.default_rng(7)
    one, two, sym = scope(), scope(), symbol()
    await store.upsert(one, [record(unit(rng), sym, T0)])
    await store.upsert(two, [record(unit(rng), sym, T0)])
    pool = store._pool
    async with tenant_transaction(pool, one) as conn:
        scopes = {r["scope"] for r in await conn.fetch("SELECT DISTINCT scope FROM decision.market_states")}
    assert one in scopes and two not in scopes
    async with pool.acquire() as conn:
        outside = {r["scope"] for r in await conn.fetch("SELECT DISTINCT scope FROM decision.market_states")}
        async with conn.transaction():
            # A test table is small enough for a sequential scan: ask what the index plan is.
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    "EXPLAIN SELECT id FROM decision.market_states WHERE scope = 'market'"
                    " ORDER BY embedding <=> $1 LIMIT 10",
                    unit(rng),
                )
            )
        role = await conn.fetchval("SELECT current_user")
    assert outside <= {MARKET}
    assert "market_states_embedding" in plan, plan
    assert role == "trading_decision_app"
