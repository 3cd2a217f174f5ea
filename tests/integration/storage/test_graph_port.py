"""One test suite for the graph storage port (runtime.graph), run against
each adapter: PostgreSQL always (audit's tables, row-level security), and
ArangoDB when ``ARANGO_URL`` names a server (``ARANGO_USERNAME``, default
root, and ``ARANGO_PASSWORD``; a database of its own per session, dropped
afterwards); skipped with that reason otherwise.

The graph is a small lineage (strategy -> signals -> intents -> orders ->
fills, model versions -> signals) of one tenant, and the same keys under a
second tenant: every query of one tenant must answer as if the other did
not exist."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio

from runtime.graph import (
    Cursor,
    Direction,
    Edge,
    GraphStore,
    Node,
    NodeKey,
    PostgresGraphStore,
)
from runtime.storage.migrations import migrate_pool
from runtime.storage.postgres import tenant_transaction

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DOWN, UP = Direction.DOWNSTREAM, Direction.UPSTREAM


@pytest_asyncio.fixture(loop_scope="session", params=["postgres", "arango"])
async def graph(request: pytest.FixtureRequest, pg_pool: asyncpg.Pool) -> AsyncIterator[GraphStore]:
    if request.param == "postgres":
        await migrate_pool(pg_pool, "audit")
        yield PostgresGraphStore(pg_pool, schema="audit")
        return
    url = os.environ.get("ARANGO_URL", "")
    if not url:
        pytest.skip("ArangoDB adapter: set ARANGO_URL (and ARANGO_PASSWORD) to run it against a server")
    from arango import ArangoClient  # type: ignore[attr-defined]

    from runtime.graph.arango import ArangoGraphStore

    database = f"graph_test_{uuid.uuid4().hex[:10]}"
    username = os.environ.get("ARANGO_USERNAME", "root")
    password = os.environ.get("ARANGO_PASSWORD", "")
    store = await ArangoGraphStore.connect(url, database=database, username=username, password=password)
    try:
        yield store
    finally:
        await store.close()
        ArangoClient(hosts=url).db("_system", username=username, password=password).delete_database(
            database, ignore_missing=True
        )


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def k(kind: str, id_: str) -> NodeKey:
    return NodeKey(kind, id_)


STRATEGY = k("strategy", "momentum")
MODELS = (k("model_version", "gbt@1"), k("model_version", "logreg@7"))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def lineage(signals: int) -> tuple[list[Node], list[Edge]]:
    """Signal i at minute i: an intent, an order and two fills each; both
    models scored every signal."""
    nodes = [Node(STRATEGY, at(0), {"name": "momentum"})]
    nodes += [Node(m, at(0)) for m in MODELS]
    edges: list[Edge] = [Edge("runs", k("tenant", "t"), STRATEGY, at(0))]
    for i in range(signals):
        signal, intent, order = k("signal", f"s{i}"), k("order_intent", f"sig-s{i}"), k("order", f"o{i}")
        nodes += [
            Node(signal, at(i), {"symbol": "BTC-USD"}),
            Node(intent, at(i + 0.1)),
            Node(order, at(i + 0.2), {"side": "BUY"}),
        ]
        edges += [
            Edge("generated", STRATEGY, signal, at(i)),
            *(Edge("scored", m, signal, at(i)) for m in MODELS),
            Edge("derived", signal, intent, at(i + 0.1)),
            Edge("placed", intent, order, at(i + 0.2)),
        ]
        for j in range(2):
            fill = k("fill", f"f{i}-{j}")
            nodes.append(Node(fill, at(i + 0.3 + j / 10), {"price": f"{100 + i}.5"}))
            edges.append(Edge("filled", order, fill, at(i + 0.3 + j / 10)))
    return nodes, edges


async def seeded(graph: GraphStore, signals: int = 5) -> str:
    owner = tenant()
    nodes, edges = lineage(signals)
    await graph.upsert(owner, nodes, edges)
    return owner


# ---------------------------------------------------------------------------- writes


async def test_upserts_are_idempotent_keep_the_earliest_time_and_merge_attributes(graph: GraphStore) -> None:
    owner = tenant()
    node = k("order", "o1")
    await graph.upsert(owner, [Node(node, at(5), {"side": "BUY"})], [])
    await graph.upsert(owner, [Node(node, at(3), {"symbol": "ETH-USD"})], [])
    await graph.upsert(owner, [Node(node, at(9), {"side": "BUY"})], [])
    found = await graph.node(owner, node)
    assert found is not None
    assert found.at == at(3) and dict(found.attrs) == {"side": "BUY", "symbol": "ETH-USD"}
    # An edge makes both its ends exist, bare until their own upsert.
    edge = Edge("filled", node, k("fill", "f1"), at(6))
    for _ in range(2):
        await graph.upsert(owner, [], [edge])
    bare = await graph.node(owner, k("fill", "f1"))
    assert bare is not None and bare.at == at(6) and not bare.attrs
    assert [n.edge for n in await graph.neighbours(owner, node, direction=DOWN)] == [edge]
    # Duplicates within one upsert are one node and one edge.
    await graph.upsert(owner, [Node(node, at(4)), Node(node, at(2), {"x": "1"})], [edge, edge])
    again = await graph.node(owner, node)
    assert again is not None and again.at == at(2) and again.attrs["x"] == "1"
    with pytest.raises(ValueError, match="tenant"):
        await graph.upsert("", [Node(node, at(1))], [])


# ---------------------------------------------------------------------------- neighbours


async def test_neighbours_by_direction_kind_time_and_pages(graph: GraphStore) -> None:
    owner = await seeded(graph, signals=6)
    signals = await graph.neighbours(owner, STRATEGY, direction=DOWN)
    assert [n.node.key.id for n in signals] == [f"s{i}" for i in range(6)]
    assert signals[0].node.attrs == {"symbol": "BTC-USD"} and signals[0].edge.at == at(0)
    causes = await graph.neighbours(owner, k("signal", "s2"), direction=UP)
    assert sorted(n.node.key for n in causes) == sorted([STRATEGY, *MODELS])
    scored = await graph.neighbours(owner, k("signal", "s2"), direction=UP, edge_kinds=["scored"])
    assert sorted(n.node.key for n in scored) == sorted(MODELS)
    ranged = await graph.neighbours(owner, STRATEGY, direction=DOWN, start=at(2), end=at(4))
    assert [n.node.key.id for n in ranged] == ["s2", "s3"]
    pages, after = [], None
    while True:
        page = await graph.neighbours(owner, MODELS[0], direction=DOWN, after=after, limit=4)
        pages.append([n.node.key.id for n in page])
        if len(page) < 4:
            break
        last = page[-1]
        after = Cursor(last.edge.at, last.node.key.kind, last.node.key.id)
    assert pages == [["s0", "s1", "s2", "s3"], ["s4", "s5"]]


# ---------------------------------------------------------------------------- walks


async def test_a_fill_walked_back_reaches_its_signal_models_strategy_and_tenant(graph: GraphStore) -> None:
    owner = await seeded(graph)
    walk = await graph.walk(owner, [k("fill", "f3-1")], direction=UP, max_depth=8)
    assert set(walk.nodes) == {
        k("fill", "f3-1"),
        k("order", "o3"),
        k("order_intent", "sig-s3"),
        k("signal", "s3"),
        STRATEGY,
        *MODELS,
        k("tenant", "t"),
    }
    assert Edge("scored", MODELS[1], k("signal", "s3"), at(3)) in walk.edges
    assert len(walk.edges) == 7 and not walk.truncated
    assert walk.nodes[k("fill", "f3-1")].attrs == {"price": "103.5"}
    # Depth bounds the walk; edge kinds restrict it.
    short = await graph.walk(owner, [k("fill", "f3-1")], direction=UP, max_depth=2)
    assert set(short.nodes) == {k("fill", "f3-1"), k("order", "o3"), k("order_intent", "sig-s3")}
    kinds = await graph.walk(owner, [k("fill", "f3-1")], direction=UP, max_depth=8, edge_kinds=["filled"])
    assert set(kinds.nodes) == {k("fill", "f3-1"), k("order", "o3")}


async def test_a_downstream_walk_with_causes_and_its_node_limit(graph: GraphStore) -> None:
    owner = await seeded(graph)
    walk = await graph.walk(owner, [k("signal", "s1")], direction=DOWN, max_depth=4, with_causes=True)
    reached = {k("signal", "s1"), k("order_intent", "sig-s1"), k("order", "o1"), k("fill", "f1-0"),
               k("fill", "f1-1")}  # fmt: skip
    assert set(walk.nodes) == reached | {STRATEGY, *MODELS}
    assert Edge("generated", STRATEGY, k("signal", "s1"), at(1)) in walk.edges
    plain = await graph.walk(owner, [k("signal", "s1")], direction=DOWN, max_depth=4)
    assert set(plain.nodes) == reached
    capped = await graph.walk(owner, [STRATEGY], direction=DOWN, max_depth=4, max_nodes=5)
    assert capped.truncated and len(capped.nodes) <= 5 + 1 + 1


async def test_subgraph_of_a_strategy_in_a_time_range_page_by_page(graph: GraphStore) -> None:
    owner = await seeded(graph, signals=7)
    seen: list[NodeKey] = []
    edges: set[Edge] = set()
    after = None
    pages = 0
    while True:
        page = await graph.subgraph(
            owner, STRATEGY, direction=DOWN, max_depth=5, start=at(1), end=at(6), after=after, limit=2
        )
        assert page.root is not None and page.root.attrs == {"name": "momentum"}
        seen += [n.key for n in page.nodes]
        edges |= set(page.edges)
        pages += 1
        if page.next is None:
            break
        after = page.next
    assert pages == 3  # signals 1..5, two per page
    signals = sorted(n.id for n in seen if n.kind == "signal")
    assert signals == ["s1", "s2", "s3", "s4", "s5"]
    assert sorted(n.id for n in seen if n.kind == "fill") == sorted(
        f"f{i}-{j}" for i in range(1, 6) for j in (0, 1)
    )
    # Each page brings its signals' model versions (their causes) along.
    assert set(MODELS) <= set(seen)
    assert Edge("scored", MODELS[0], k("signal", "s4"), at(4)) in edges
    assert STRATEGY not in seen  # the root is reported apart
    missing = await graph.subgraph(owner, k("strategy", "nope"), direction=DOWN, max_depth=5)
    assert missing.root is None and not missing.nodes and missing.next is None


# ---------------------------------------------------------------------------- tenants


async def test_every_query_is_tenant_scoped(graph: GraphStore) -> None:
    owner, other = await seeded(graph), tenant()
    fill = k("fill", "f2-0")
    # The other tenant knows nothing of the owner's graph...
    assert await graph.node(other, fill) is None
    assert await graph.neighbours(other, STRATEGY, direction=DOWN) == []
    empty = await graph.walk(other, [fill], direction=UP, max_depth=8)
    assert not empty.nodes and not empty.edges
    page = await graph.subgraph(other, STRATEGY, direction=DOWN, max_depth=5)
    assert page.root is None and not page.nodes
    # ... and the same keys of its own stay apart from the owner's.
    await graph.upsert(
        other, [Node(fill, at(50), {"price": "1"})], [Edge("filled", k("order", "x"), fill, at(50))]
    )
    mine = await graph.walk(owner, [fill], direction=UP, max_depth=8)
    theirs = await graph.walk(other, [fill], direction=UP, max_depth=8)
    assert k("order", "o2") in mine.nodes and k("order", "x") not in mine.nodes
    assert set(theirs.nodes) == {fill, k("order", "x")}
    assert mine.nodes[fill].attrs == {"price": "102.5"} and theirs.nodes[fill].attrs == {"price": "1"}
    with pytest.raises(ValueError, match="tenant"):
        await graph.node("", fill)


async def test_postgres_row_level_security_hides_other_tenants_rows(
    graph: GraphStore, pg_pool: asyncpg.Pool
) -> None:
    if not isinstance(graph, PostgresGraphStore):
        pytest.skip("row-level security is PostgreSQL's")
    owner, other = await seeded(graph, signals=2), tenant()
    # SQL that forgets the tenant still sees one tenant's rows only.
    async with tenant_transaction(pg_pool, other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit.graph_nodes WHERE tenant_id = $1", owner) == 0
        assert await conn.fetchval("SELECT count(*) FROM audit.graph_edges WHERE tenant_id = $1", owner) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO audit.graph_nodes (tenant_id, kind, id, at) VALUES ($1, 'fill', 'x', now())",
                owner,
            )
    async with tenant_transaction(pg_pool, owner) as conn:
        assert await conn.fetchval("SELECT count(DISTINCT tenant_id) FROM audit.graph_nodes") == 1
