"""PostgreSQL adapter of the graph port: two tables under row-level security.

The tables (``graph_nodes``, ``graph_edges``) live in the schema of the
service that owns the graph and come from its migrations (audit:
services/audit/migrations/0002_graph.sql, which explains the keys and
indexes). Every statement runs in :func:`runtime.storage.postgres.tenant_transaction`,
so the tenant isolation policies hold whatever the SQL says; the SQL names
the tenant too, so the indexes (all led by ``tenant_id``) are used.

Walks are one recursive CTE each: one round trip whatever the depth, every
step an index lookup (upstream by the edges' key, downstream by
``graph_edges_downstream``). The recursion is bounded by the depth and pulled
lazily through a LIMIT, so a walk that would reach too much stops early.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from runtime.graph.port import (
    DEFAULT_MAX_NODES,
    Cursor,
    Direction,
    Edge,
    GraphReader,
    GraphStore,
    Neighbour,
    Node,
    NodeKey,
    Walk,
    check_tenant,
    merged_nodes,
    unique_edges,
)
from runtime.storage.postgres import TENANT_ROLE, quote_ident, tenant_transaction


def _node(kind: str, id_: str, at: datetime, attrs: Any) -> Node:
    return Node(NodeKey(kind, id_), at, attrs or {})


def _edge(row: asyncpg.Record) -> Edge:
    """The edge of a row whose columns start with kind, src_kind, src_id, dst_kind, dst_id, at."""
    return Edge(row[0], NodeKey(row[1], row[2]), NodeKey(row[3], row[4]), row[5])


class PostgresGraphStore(GraphStore):
    """The graph of every tenant in `schema`'s two tables, through `pool`."""

    def __init__(self, pool: asyncpg.Pool, *, schema: str, role: str | None = TENANT_ROLE) -> None:
        self._pool = pool
        self._role = role
        s = quote_ident(schema)
        self._nodes = f"{s}.graph_nodes"
        self._edges = f"{s}.graph_edges"
        # Set on a view bound to one tenant transaction (see reader).
        self._bound: tuple[str, asyncpg.Connection] | None = None

    async def close(self) -> None:
        return None  # the pool belongs to the service

    @asynccontextmanager
    async def _tx(self, tenant: str) -> AsyncIterator[asyncpg.Connection]:
        check_tenant(tenant)
        if self._bound is not None:
            bound_tenant, conn = self._bound
            if tenant != bound_tenant:
                raise ValueError("a bound graph view serves its own tenant only")
            yield conn
            return
        async with tenant_transaction(self._pool, tenant, role=self._role) as conn:
            yield conn

    @asynccontextmanager
    async def reader(self, tenant: str) -> AsyncIterator[GraphReader]:
        """This store bound to one tenant transaction, so a subgraph's reads
        share one connection and one snapshot (round trips: the three
        statements)."""
        async with self._tx(tenant) as conn:
            view = copy.copy(self)
            view._bound = (tenant, conn)
            yield view

    # ------------------------------------------------------------------ writes

    async def upsert(self, tenant: str, nodes: Sequence[Node], edges: Sequence[Edge]) -> None:
        check_tenant(tenant)
        rows = merged_nodes(nodes, edges)
        links = unique_edges(edges)
        if not rows:
            return
        async with self._tx(tenant) as conn:
            # The WHERE skips rows the upsert would not change, so a
            # redelivered event leaves no dead row versions behind.
            await conn.execute(
                f"""INSERT INTO {self._nodes} AS n (tenant_id, kind, id, at, attrs)
                    SELECT $1, r.kind, r.id, r.at, r.attrs::jsonb
                    FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[])
                         AS r(kind, id, at, attrs)
                    ON CONFLICT (tenant_id, kind, id) DO UPDATE
                        SET at = least(n.at, excluded.at), attrs = n.attrs || excluded.attrs
                        WHERE n.at > excluded.at OR NOT n.attrs @> excluded.attrs""",
                tenant,
                [n.key.kind for n in rows],
                [n.key.id for n in rows],
                [n.at for n in rows],
                [json.dumps(dict(n.attrs), sort_keys=True) for n in rows],
            )
            if links:
                await conn.execute(
                    f"""INSERT INTO {self._edges} (tenant_id, kind, src_kind, src_id, dst_kind, dst_id, at)
                        SELECT $1, r.kind, r.src_kind, r.src_id, r.dst_kind, r.dst_id, r.at
                        FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                    $7::timestamptz[])
                             AS r(kind, src_kind, src_id, dst_kind, dst_id, at)
                        ON CONFLICT DO NOTHING""",
                    tenant,
                    [e.kind for e in links],
                    [e.src.kind for e in links],
                    [e.src.id for e in links],
                    [e.dst.kind for e in links],
                    [e.dst.id for e in links],
                    [e.at for e in links],
                )

    # ------------------------------------------------------------------ reads

    async def node(self, tenant: str, key: NodeKey) -> Node | None:
        async with self._tx(tenant) as conn:
            row = await conn.fetchrow(
                f"SELECT at, attrs FROM {self._nodes} WHERE tenant_id = $1 AND kind = $2 AND id = $3",
                tenant,
                key.kind,
                key.id,
            )
        return None if row is None else _node(key.kind, key.id, row["at"], row["attrs"])

    async def neighbours(
        self,
        tenant: str,
        key: NodeKey,
        *,
        direction: Direction,
        edge_kinds: Collection[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        after: Cursor | None = None,
        limit: int = 100,
    ) -> list[Neighbour]:
        check_tenant(tenant)
        near, far = ("src", "dst") if direction is Direction.DOWNSTREAM else ("dst", "src")
        # Only the filters asked for: a prepared plan then matches the index.
        clauses = ["e.tenant_id = $1", f"e.{near}_kind = $2", f"e.{near}_id = $3"]
        args: list[Any] = [tenant, key.kind, key.id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if edge_kinds is not None:
            clauses.append(f"e.kind = ANY({arg(list(edge_kinds))}::text[])")
        if start is not None:
            clauses.append(f"e.at >= {arg(start)}")
        if end is not None:
            clauses.append(f"e.at < {arg(end)}")
        if after is not None:
            clauses.append(
                f"(e.at, e.{far}_kind, e.{far}_id) > ({arg(after.at)}, {arg(after.kind)}, {arg(after.id)})"
            )
        sql = f"""SELECT e.kind, e.src_kind, e.src_id, e.dst_kind, e.dst_id, e.at,
                         n.at AS n_at, n.attrs AS n_attrs
                  FROM {self._edges} e
                  JOIN {self._nodes} n ON n.tenant_id = e.tenant_id AND n.kind = e.{far}_kind
                                      AND n.id = e.{far}_id
                  WHERE {" AND ".join(clauses)}
                  ORDER BY e.at, e.{far}_kind, e.{far}_id
                  LIMIT {arg(limit)}"""
        async with self._tx(tenant) as conn:
            rows = await conn.fetch(sql, *args)
        out = []
        for row in rows:
            edge = _edge(row)
            far_key = edge.far(direction)
            out.append(Neighbour(edge, _node(far_key.kind, far_key.id, row["n_at"], row["n_attrs"])))
        return out

    async def walk(
        self,
        tenant: str,
        starts: Sequence[NodeKey],
        *,
        direction: Direction,
        max_depth: int,
        edge_kinds: Collection[str] | None = None,
        with_causes: bool = False,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> Walk:
        check_tenant(tenant)
        if not starts:
            return Walk({}, frozenset())
        near, far = ("src", "dst") if direction is Direction.DOWNSTREAM else ("dst", "src")
        kinds_clause = "AND e.kind = ANY($5::text[])" if edge_kinds is not None else ""
        causes = with_causes and direction is Direction.DOWNSTREAM
        # A step is one edge followed. The cap bounds the steps pulled out of
        # the recursion (it stops there); a tree reaches one node per step.
        cap = max_nodes + len(starts) + 1
        # Every join is LATERAL with OFFSET 0 (which keeps the planner from
        # flattening it): a lookup by index per row of the walk. The planner
        # cannot estimate a recursion's size, and with a few hundred starts it
        # would sort or hash the tenant's whole edge table instead.
        causes_sql = (
            f"""UNION ALL
                SELECT 'cause', c.kind, c.src_kind, c.src_id, c.dst_kind, c.dst_id, c.at,
                       c.src_kind, c.src_id, n.at, n.attrs::text
                FROM (
                    -- Causes the walk did not reach itself (for the others it
                    -- has the edge already).
                    SELECT c.* FROM (SELECT DISTINCT node_kind, node_id FROM steps) r
                    CROSS JOIN LATERAL (
                        SELECT * FROM {self._edges} c
                        WHERE c.tenant_id = $1 AND c.dst_kind = r.node_kind AND c.dst_id = r.node_id
                        OFFSET 0
                    ) c
                    WHERE NOT EXISTS (
                        SELECT 1 FROM steps x WHERE x.node_kind = c.src_kind AND x.node_id = c.src_id
                    )
                    OFFSET 0
                ) c
                CROSS JOIN LATERAL (
                    SELECT n.at, n.attrs FROM {self._nodes} n
                    WHERE n.tenant_id = $1 AND n.kind = c.src_kind AND n.id = c.src_id
                    OFFSET 0
                ) n"""
            if causes
            else ""
        )
        sql = f"""WITH RECURSIVE
            walk(depth, node_kind, node_id, kind, src_kind, src_id, dst_kind, dst_id, at) AS (
                SELECT 0, s.kind, s.id, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                       NULL::timestamptz
                FROM unnest($2::text[], $3::text[]) AS s(kind, id)
              UNION
                SELECT w.depth + 1, e.{far}_kind, e.{far}_id, e.kind, e.src_kind, e.src_id, e.dst_kind,
                       e.dst_id, e.at
                FROM walk w
                CROSS JOIN LATERAL (
                    SELECT * FROM {self._edges} e
                    WHERE e.tenant_id = $1 AND e.{near}_kind = w.node_kind AND e.{near}_id = w.node_id
                          {kinds_clause}
                    OFFSET 0
                ) e
                WHERE w.depth < $4
            ),
            steps AS (SELECT * FROM walk LIMIT {cap})
            SELECT 'step' AS part, s.kind, s.src_kind, s.src_id, s.dst_kind, s.dst_id, s.at,
                   s.node_kind, s.node_id, n.at AS n_at, n.attrs::text AS n_attrs
            FROM steps s
            CROSS JOIN LATERAL (
                SELECT n.at, n.attrs FROM {self._nodes} n
                WHERE n.tenant_id = $1 AND n.kind = s.node_kind AND n.id = s.node_id
                OFFSET 0
            ) n
            {causes_sql}"""
        args: list[Any] = [tenant, [k.kind for k in starts], [k.id for k in starts], max_depth]
        if edge_kinds is not None:
            args.append(list(edge_kinds))
        async with self._tx(tenant) as conn:
            rows = await conn.fetch(sql, *args)
        nodes: dict[NodeKey, Node] = {}
        edges: set[Edge] = set()
        steps = 0
        # Columns by position: part, the edge's six (kind first), node_kind, node_id, n_at, n_attrs.
        # The attributes come as text, decoded once per node (the causes repeat a few nodes often).
        for part, kind, src_kind, src_id, dst_kind, dst_id, at, node_kind, node_id, n_at, n_attrs in rows:
            key = NodeKey(node_kind, node_id)
            if key not in nodes:
                nodes[key] = Node(key, n_at, json.loads(n_attrs))
            if part == "step":
                steps += 1
            if kind is not None:
                edges.add(Edge(kind, NodeKey(src_kind, src_id), NodeKey(dst_kind, dst_id), at))
        return Walk(nodes, frozenset(edges), truncated=steps >= cap or len(nodes) > max_nodes + len(starts))
