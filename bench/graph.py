"""Lineage queries over a day of trading, on the PostgreSQL graph adapter.

``python -m bench.graph`` (options: ``--help``) loads a day of one tenant's
trading among several tenants into audit's graph tables, through the
adapter's own upserts in the batches the lineage consumer writes, then
times the queries GetLineage makes (the adapter's subgraph: the start, its
first page of neighbours, the walk from them, in one tenant transaction),
and prints a Markdown report (``--report`` also writes it to a file;
bench/results/graph.md is one).

The day (defaults): 5 strategies, 3 model versions, 50,000 signals that each
led to an order intent, an order and 1 or 2 fills (~75,000 fills), spread
evenly over 24 h; plus 4 other tenants with 10,000 orders each, with the
same ids (the indexes and row-level security must keep them apart, not luck).

PostgreSQL: the server on ``settings.postgres.admin_dsn`` when one answers
on loopback (the tests' and ``./dev run``'s), else an embedded one started
in a temporary directory; either way a database of its own, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from runtime.config import Settings
from runtime.graph import Direction, Edge, Node, NodeKey, PostgresGraphStore
from runtime.storage.migrations import migrate_pool
from runtime.storage.postgres import create_pool
from services.audit.domain import lineage as L
from tools.infra import drop_database, ensure_database, free_port, port_answers, start_postgres

DAY = datetime(2026, 11, 20, tzinfo=UTC)
MODELS = ("gbt-trend@2026-11-01.1", "logreg-trend@2026-11-02.3", "gbt-revert@2026-11-05.2")


@dataclass(frozen=True)
class Day:
    """The ids of one tenant's day, to pick query starts from."""

    strategies: list[str]
    fills: list[str]
    orders: list[str]
    nodes: int
    edges: int


def trading_day(orders: int, strategies: int, seed: int) -> tuple[list[tuple[list[Node], list[Edge]]], Day]:
    """One tenant's day as the lineage consumer would write it: one
    (nodes, edges) chunk per signal, with the ids the events would carry."""
    rng = random.Random(seed)
    names = [f"strategy-{i}" for i in range(strategies)]
    chunks: list[tuple[list[Node], list[Edge]]] = []
    fills: list[str] = []
    order_ids: list[str] = []
    step = 86_400 / orders
    for n in range(orders):
        at = DAY + timedelta(seconds=n * step + rng.random() * step * 0.5)
        strategy = NodeKey(L.STRATEGY, names[n % strategies])
        signal = NodeKey(L.SIGNAL, f"sig-{n:07d}")
        intent = NodeKey(L.ORDER_INTENT, f"sig-{n:07d}")
        order = NodeKey(L.ORDER, f"ord-{n:07d}")
        used = MODELS[:2] if n % 3 else MODELS[1:]
        nodes = [
            Node(signal, at, {"symbol": "BTC-USD", "direction": "BUY", "strength": "0.41"}),
            Node(
                intent,
                at + timedelta(milliseconds=2),
                {"intent_id": str(uuid.UUID(int=n)), "quantity": "0.01"},
            ),
            Node(order, at + timedelta(milliseconds=5), {"client_order_id": intent.id, "side": "BUY"}),
        ]
        edges = [
            Edge(L.GENERATED, strategy, signal, at),
            *(Edge(L.SCORED, NodeKey(L.MODEL_VERSION, m), signal, at) for m in used),
            Edge(L.DERIVED, signal, intent, at + timedelta(milliseconds=2)),
            Edge(L.PLACED, intent, order, at + timedelta(milliseconds=5)),
        ]
        for f in range(1 + (n % 2)):
            fill = NodeKey(L.FILL, f"fill-{n:07d}-{f}")
            fill_at = at + timedelta(milliseconds=9 + f)
            nodes.append(Node(fill, fill_at, {"price": "101.5", "quantity": "0.005"}))
            edges.append(Edge(L.FILLED, order, fill, fill_at))
            fills.append(fill.id)
        order_ids.append(order.id)
        chunks.append((nodes, edges))
    head_nodes = [Node(NodeKey(L.STRATEGY, s), DAY) for s in names]
    head_edges = [Edge(L.RUNS, NodeKey(L.TENANT, "tenant"), NodeKey(L.STRATEGY, s), DAY) for s in names]
    chunks.insert(0, (head_nodes, head_edges))
    node_count = sum(len(n) for n, _ in chunks) + len(MODELS) + 1
    edge_count = sum(len(e) for _, e in chunks)
    return chunks, Day(names, fills, order_ids, node_count, edge_count)


async def load(
    graph: PostgresGraphStore, tenant: str, chunks: list[tuple[list[Node], list[Edge]]], batch: int
) -> float:
    """Upsert the chunks `batch` signals at a time (the consumer's batches); seconds taken."""
    started = time.perf_counter()
    for i in range(0, len(chunks), batch):
        part = chunks[i : i + batch]
        await graph.upsert(tenant, [n for ns, _ in part for n in ns], [e for _, es in part for e in es])
    return time.perf_counter() - started


@dataclass(frozen=True)
class Timing:
    name: str
    what: str
    samples: list[float]  # milliseconds
    reached: float  # mean nodes returned

    def row(self) -> str:
        s = sorted(self.samples)
        p50 = statistics.median(s)
        p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
        return (
            f"| {self.name} | {self.what} | {len(s)} | {self.reached:,.0f} | {p50:.2f} | {p99:.2f} | "
            f"{max(s):.2f} |"
        )


async def timed(
    name: str, what: str, count: int, query: Callable[[int], Awaitable[int]], warmup: int = 20
) -> Timing:
    for i in range(warmup):
        await query(i)
    samples, reached = [], 0
    for i in range(count):
        started = time.perf_counter()
        reached += await query(i)
        samples.append((time.perf_counter() - started) * 1000)
    return Timing(name, what, samples, reached / count)


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def run(args: argparse.Namespace) -> str:
    settings = Settings()
    admin_dsn = settings.postgres.admin_dsn
    server = None
    scratch = None
    admin = urlsplit(admin_dsn)
    if not port_answers(admin.hostname or "127.0.0.1", admin.port or 5432):
        scratch = tempfile.TemporaryDirectory(prefix="bench-graph-")
        port = free_port()
        server = start_postgres(port, Path(scratch.name) / "pg", fast=True)
        admin_dsn = urlunsplit(admin._replace(netloc=f"postgres@127.0.0.1:{port}"))
    database = f"bench_graph_{uuid.uuid4().hex[:8]}"
    await ensure_database(admin_dsn, database)
    pool: asyncpg.Pool | None = None
    try:
        pool = await create_pool(
            settings.postgres, dsn=_with_database(admin_dsn, database), min_size=2, max_size=4,
            application_name="bench-graph",
        )  # fmt: skip
        await migrate_pool(pool, "audit")
        graph = PostgresGraphStore(pool, schema="audit")
        chunks, day = trading_day(args.orders, args.strategies, seed=1)
        target = "tenant-bench"
        load_s = await load(graph, target, chunks, args.batch)
        others = trading_day(args.other_orders, args.strategies, seed=2)[0] if args.other_tenants else []
        for t in range(args.other_tenants):
            await load(graph, f"tenant-other-{t}", others, args.batch)
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE audit.graph_nodes; ANALYZE audit.graph_edges")
            rows = await conn.fetchval(
                "SELECT (SELECT count(*) FROM audit.graph_nodes) + (SELECT count(*) FROM audit.graph_edges)"
            )
            size = await conn.fetchval(
                "SELECT pg_size_pretty(pg_total_relation_size('audit.graph_nodes')"
                " + pg_total_relation_size('audit.graph_edges'))"
            )
        rng = random.Random(7)
        fills = [rng.choice(day.fills) for _ in range(args.queries)]
        orders = [rng.choice(day.orders) for _ in range(args.queries)]
        hours = [rng.randrange(24) for _ in range(args.queries)]

        up, down = Direction.UPSTREAM, Direction.DOWNSTREAM
        day_end = DAY + timedelta(days=1)

        def strategy(i: int) -> NodeKey:
            return NodeKey(L.STRATEGY, day.strategies[i % len(day.strategies)])

        async def fill_back(i: int) -> int:
            page = await graph.subgraph(target, NodeKey(L.FILL, fills[i]), direction=up, max_depth=8)
            assert any(n.key.kind == L.MODEL_VERSION for n in page.nodes)
            return len(page.nodes)

        async def order_back(i: int) -> int:
            page = await graph.subgraph(target, NodeKey(L.ORDER, orders[i]), direction=up, max_depth=8)
            return len(page.nodes)

        async def strategy_hour(i: int) -> int:
            start = DAY + timedelta(hours=hours[i])
            end = start + timedelta(hours=1)
            page = await graph.subgraph(
                target, strategy(i), direction=down, max_depth=8, start=start, end=end, limit=50
            )
            return len(page.nodes)

        async def strategy_day_page(i: int) -> int:
            page = await graph.subgraph(
                target, strategy(i), direction=down, max_depth=8, start=DAY, end=day_end, limit=500
            )
            return len(page.nodes)

        async def strategy_whole_day(i: int) -> int:
            # Every page of one strategy's day, as a client paging GetLineage with page_size 500.
            after, total = None, 0
            while True:
                page = await graph.subgraph(
                    target, strategy(i), direction=down, max_depth=8, start=DAY, end=day_end, limit=500,
                    after=after,
                )  # fmt: skip
                total += len(page.nodes)
                if page.next is None:
                    return total
                after = page.next

        async def other_tenant(i: int) -> int:
            # The same fill id in another tenant: its own lineage only.
            page = await graph.subgraph(
                "tenant-other-0", NodeKey(L.FILL, fills[i]), direction=up, max_depth=8
            )
            return len(page.nodes)

        per_strategy = args.orders // args.strategies
        plan: list[tuple[str, str, int, Callable[[int], Awaitable[int]]]] = [
            (
                "fill -> signal, model versions",
                "UPSTREAM from a random fill of the day",
                args.queries,
                fill_back,
            ),
            ("order -> signal, model versions", "UPSTREAM from a random order", args.queries, order_back),
            (
                "strategy, one hour",
                "DOWNSTREAM: a random hour's signals of one strategy (first page of 50) with their "
                "intents, orders, fills and model versions",
                args.queries,
                strategy_hour,
            ),
            (
                "strategy, one day, first page",
                "DOWNSTREAM: the day's first 500 signals of one strategy with everything they led to",
                max(20, args.queries // 10),
                strategy_day_page,
            ),
            (
                "strategy, whole day",
                f"every page (500 signals each) of one strategy's {per_strategy:,} signals of the day",
                5,
                strategy_whole_day,
            ),
        ]
        if args.other_tenants:
            plan.append(
                ("fill, another tenant", "the same fill id in another tenant", args.queries, other_tenant)
            )
        load_before = os.getloadavg()[0]
        timings = [await timed(*step, warmup=1 if step[2] <= 5 else 20) for step in plan]
        load_after = os.getloadavg()[0]
        versions = await pool.fetchval("SHOW server_version")
    finally:
        if pool is not None:
            await pool.close()
        await drop_database(admin_dsn, database)
        if server is not None:
            server.stop()
        if scratch is not None:
            scratch.cleanup()
    lines = [
        "# Lineage graph benchmark (PostgreSQL adapter)",
        "",
        f"`python -m bench.graph --orders {args.orders} --other-tenants {args.other_tenants} "
        f"--other-orders {args.other_orders} --queries {args.queries}`, "
        f"{datetime.now(UTC):%Y-%m-%d}, PostgreSQL {versions}, one client on loopback, "
        f"the machine's {os.cpu_count()} cores shared with whatever else runs (1-minute load average "
        f"{load_before:.1f} when the queries started, {load_after:.1f} when they ended).",
        "",
        f"Data: one tenant's day of {args.orders:,} orders ({day.nodes:,} nodes, {day.edges:,} edges: "
        f"{args.strategies} strategies, {len(MODELS)} model versions, {args.orders:,} signals, intents and "
        f"orders, {len(day.fills):,} fills) among {args.other_tenants} other tenants of "
        f"{args.other_orders:,} orders each with the same ids; {rows:,} rows, {size} with indexes. "
        f"Loaded through the adapter's upserts in batches of {args.batch} signals: "
        f"{day.nodes + day.edges:,} rows of the tenant in {load_s:.1f} s "
        f"({(day.nodes + day.edges) / load_s:,.0f} rows/s).",
        "",
        "Each query is what GetLineage runs (the adapter's subgraph: the start node, its first page of "
        "neighbours, one recursive CTE from them; three statements in one tenant transaction), "
        "without gRPC. Milliseconds.",
        "",
        "| query | what | runs | nodes returned (mean) | p50 | p99 | max |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(t.row() for t in timings),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graph", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50_000, help="orders of the measured tenant's day")
    parser.add_argument("--strategies", type=int, default=5)
    parser.add_argument("--other-tenants", type=int, default=4)
    parser.add_argument("--other-orders", type=int, default=10_000, help="orders of each other tenant")
    parser.add_argument("--batch", type=int, default=500, help="signals per upsert (a consumer batch)")
    parser.add_argument("--queries", type=int, default=1000, help="runs of each point query")
    parser.add_argument("--report", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print(report)
    if args.report is not None:
        args.report.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
