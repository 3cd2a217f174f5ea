"""ArangoDB adapter of the graph port: a document and an edge collection, AQL.

ADR-001 names ArangoDB for graph relationships; deployments that run it set
``TRADING_GRAPH__ARANGO_URL`` (compose does, for audit) and this adapter
replaces the PostgreSQL one. It passes the same port test suite
(tests/integration/storage/test_graph_port.py) when ``ARANGO_URL`` points at
a server; no ArangoDB runs in CI (none is installable there), so CI proves
the PostgreSQL adapter only.

Layout (one database, by default ``trading``):

- ``graph_nodes``: ``{_key, tenant_id, kind, id, at, attrs}``; ``_key`` is a
  digest of (tenant, kind, id), so the same key in two tenants is two
  documents;
- ``graph_edges`` (edge collection): ``{_key, _from, _to, tenant_id, kind,
  src_kind, src_id, dst_kind, dst_id, at}``; ``_key`` a digest of the
  tenant, the kind and both ends;
- ``at`` is microseconds since the epoch (UTC), an integer that sorts and
  compares exactly; persistent indexes on ``[_from, at, dst_kind, dst_id]``
  and ``[_to, at, src_kind, src_id]`` serve the paged neighbour queries.

Tenancy: ArangoDB has no row-level security, so the tenant is an attribute
that every query filters on (nodes and edges alike, in traversals on every
vertex and edge of the path) besides being part of the keys.

python-arango is synchronous: each call runs in a worker thread
(``asyncio.to_thread``), so the event loop never blocks on the network.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from arango import ArangoClient  # type: ignore[attr-defined]
from arango.cursor import Cursor as ArangoCursor
from arango.database import StandardDatabase

from runtime.graph.port import (
    DEFAULT_MAX_NODES,
    Cursor,
    Direction,
    Edge,
    GraphStore,
    Neighbour,
    Node,
    NodeKey,
    Walk,
    check_tenant,
    merged_nodes,
    unique_edges,
)

T = TypeVar("T")

NODES = "graph_nodes"
EDGES = "graph_edges"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(at: datetime) -> int:
    """Microseconds since the epoch, exactly (naive times are taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _digest(*parts: str) -> str:
    # ArangoDB keys allow few characters and at most 254 bytes: a digest of
    # the identity fits any kind and id.
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def node_key(tenant: str, key: NodeKey) -> str:
    return _digest(tenant, key.kind, key.id)


def node_handle(tenant: str, key: NodeKey) -> str:
    return f"{NODES}/{node_key(tenant, key)}"


def _node_doc(tenant: str, node: Node) -> dict[str, Any]:
    return {
        "_key": node_key(tenant, node.key),
        "tenant_id": tenant,
        "kind": node.key.kind,
        "id": node.key.id,
        "at": to_us(node.at),
        "attrs": dict(node.attrs),
    }


def _edge_doc(tenant: str, edge: Edge) -> dict[str, Any]:
    return {
        "_key": _digest(tenant, edge.kind, edge.src.kind, edge.src.id, edge.dst.kind, edge.dst.id),
        "_from": node_handle(tenant, edge.src),
        "_to": node_handle(tenant, edge.dst),
        "tenant_id": tenant,
        "kind": edge.kind,
        "src_kind": edge.src.kind,
        "src_id": edge.src.id,
        "dst_kind": edge.dst.kind,
        "dst_id": edge.dst.id,
        "at": to_us(edge.at),
    }


def _node_of(doc: dict[str, Any]) -> Node:
    return Node(NodeKey(doc["kind"], doc["id"]), from_us(int(doc["at"])), dict(doc.get("attrs") or {}))


def _edge_of(doc: dict[str, Any]) -> Edge:
    return Edge(
        doc["kind"],
        NodeKey(doc["src_kind"], doc["src_id"]),
        NodeKey(doc["dst_kind"], doc["dst_id"]),
        from_us(int(doc["at"])),
    )


# Upserts keep the earliest time and merge the attributes, as the port says.
# UPSERT is a read then a write: `exclusive` serializes concurrent batches
# (two consumers upserting a tenant's strategy node) instead of failing one
# with a write-write conflict.
_UPSERT_NODES = f"""
FOR d IN @docs
  UPSERT {{_key: d._key}}
  INSERT d
  UPDATE {{at: OLD.at < d.at ? OLD.at : d.at, attrs: MERGE(OLD.attrs, d.attrs)}}
  IN {NODES} OPTIONS {{exclusive: true}}
"""
_INSERT_EDGES = f"""
FOR d IN @docs
  INSERT d INTO {EDGES} OPTIONS {{overwriteMode: "ignore"}}
"""
_NODE = f"""
FOR n IN {NODES}
  FILTER n._key == @key AND n.tenant_id == @tenant
  RETURN KEEP(n, "kind", "id", "at", "attrs")
"""
_EDGE_FIELDS = '"kind", "src_kind", "src_id", "dst_kind", "dst_id", "at"'


class ArangoGraphStore(GraphStore):
    """The graph of every tenant in one ArangoDB database (subgraph: the port's)."""

    def __init__(self, db: StandardDatabase, client: ArangoClient | None = None) -> None:
        self._db = db
        self._client = client

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        database: str = "trading",
        username: str = "root",
        password: str = "",
        request_timeout_s: float = 10.0,
    ) -> ArangoGraphStore:
        """Open `database` at `url` (created with its collections and indexes
        when missing, which needs the user's rights on ``_system``)."""

        def open_db() -> tuple[ArangoClient, StandardDatabase]:
            client = ArangoClient(hosts=url, request_timeout=request_timeout_s)
            system = client.db("_system", username=username, password=password, verify=True)
            if not system.has_database(database):
                system.create_database(database)
            db = client.db(database, username=username, password=password, verify=True)
            _ensure_schema(db)
            return client, db

        client, db = await asyncio.to_thread(open_db)
        return cls(db, client)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    async def _query(self, aql: str, bind_vars: dict[str, Any]) -> list[Any]:
        def run() -> list[Any]:
            cursor = cast(ArangoCursor, self._db.aql.execute(aql, bind_vars=bind_vars, batch_size=10_000))
            return list(cursor)

        return await self._call(run)

    # ------------------------------------------------------------------ writes

    async def upsert(self, tenant: str, nodes: Sequence[Node], edges: Sequence[Edge]) -> None:
        check_tenant(tenant)
        rows = merged_nodes(nodes, edges)
        if rows:
            await self._query(_UPSERT_NODES, {"docs": [_node_doc(tenant, n) for n in rows]})
        links = unique_edges(edges)
        if links:
            await self._query(_INSERT_EDGES, {"docs": [_edge_doc(tenant, e) for e in links]})

    # ------------------------------------------------------------------ reads

    async def node(self, tenant: str, key: NodeKey) -> Node | None:
        check_tenant(tenant)
        found = await self._query(_NODE, {"key": node_key(tenant, key), "tenant": tenant})
        return _node_of(found[0]) if found else None

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
        downstream = direction is Direction.DOWNSTREAM
        near, far, far_prefix = ("_from", "_to", "dst") if downstream else ("_to", "_from", "src")
        # The edge collection directly (not a one-step traversal): the
        # persistent index on [near end, at, far kind, far id] serves the
        # filter, the order and the cursor.
        aql = f"""
FOR e IN {EDGES}
  FILTER e.{near} == @handle AND e.tenant_id == @tenant
  FILTER @kinds == null OR e.kind IN @kinds
  FILTER @start == null OR e.at >= @start
  FILTER @end == null OR e.at < @end
  FILTER @after == null OR e.at > @after.at
         OR (e.at == @after.at AND (e.{far_prefix}_kind > @after.kind
             OR (e.{far_prefix}_kind == @after.kind AND e.{far_prefix}_id > @after.id)))
  SORT e.at, e.{far_prefix}_kind, e.{far_prefix}_id
  LIMIT @limit
  LET n = DOCUMENT(e.{far})
  FILTER n != null AND n.tenant_id == @tenant
  RETURN {{e: KEEP(e, {_EDGE_FIELDS}), n: KEEP(n, "kind", "id", "at", "attrs")}}
"""
        rows = await self._query(
            aql,
            {
                "handle": node_handle(tenant, key),
                "tenant": tenant,
                "kinds": None if edge_kinds is None else list(edge_kinds),
                "start": None if start is None else to_us(start),
                "end": None if end is None else to_us(end),
                "after": None
                if after is None
                else {"at": to_us(after.at), "kind": after.kind, "id": after.id},
                "limit": limit,
            },
        )
        return [Neighbour(_edge_of(r["e"]), _node_of(r["n"])) for r in rows]

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
        way = "OUTBOUND" if direction is Direction.DOWNSTREAM else "INBOUND"
        cap = max_nodes + len(starts) + 1
        # PRUNE stops at an edge of another tenant or kind; the FILTERs drop
        # it and check every vertex and edge of the path for the tenant.
        aql = f"""
LET steps = (
  FOR s IN @starts
    FOR v, e, p IN 0..@depth {way} s {EDGES}
      PRUNE e != null AND (e.tenant_id != @tenant OR (@kinds != null AND e.kind NOT IN @kinds))
      FILTER v.tenant_id == @tenant
      FILTER e == null OR (e.tenant_id == @tenant AND (@kinds == null OR e.kind IN @kinds))
      LIMIT @cap
      RETURN {{v: KEEP(v, "_id", "kind", "id", "at", "attrs"), e: e == null ? null : KEEP(e, {_EDGE_FIELDS})}}
)
LET causes = @causes ? (
  FOR h IN UNIQUE(steps[*].v._id)
    FOR c, ce IN 1..1 INBOUND h {EDGES}
      FILTER ce.tenant_id == @tenant AND c.tenant_id == @tenant
      RETURN {{v: KEEP(c, "kind", "id", "at", "attrs"), e: KEEP(ce, {_EDGE_FIELDS})}}
) : []
RETURN {{steps, causes}}
"""
        result = await self._query(
            aql,
            {
                "starts": [node_handle(tenant, k) for k in starts],
                "depth": max_depth,
                "tenant": tenant,
                "kinds": None if edge_kinds is None else list(edge_kinds),
                "cap": cap,
                "causes": with_causes and direction is Direction.DOWNSTREAM,
            },
        )
        found = result[0] if result else {"steps": [], "causes": []}
        nodes: dict[NodeKey, Node] = {}
        edges: set[Edge] = set()
        for item in [*found["steps"], *found["causes"]]:
            node = _node_of(item["v"])
            nodes.setdefault(node.key, node)
            if item["e"] is not None:
                edges.add(_edge_of(item["e"]))
        truncated = len(found["steps"]) >= cap or len(nodes) > max_nodes + len(starts)
        return Walk(nodes, frozenset(edges), truncated=truncated)


def _ensure_schema(db: StandardDatabase) -> None:
    """The two collections and their indexes, created when missing
    (idempotent: ArangoDB returns an existing identical index)."""
    if not db.has_collection(NODES):
        db.create_collection(NODES)
    if not db.has_collection(EDGES):
        db.create_collection(EDGES, edge=True)
    nodes, edges = db.collection(NODES), db.collection(EDGES)
    nodes.add_index({"type": "persistent", "fields": ["tenant_id", "kind", "id"], "unique": True})
    edges.add_index({"type": "persistent", "fields": ["_from", "at", "dst_kind", "dst_id"]})
    edges.add_index({"type": "persistent", "fields": ["_to", "at", "src_kind", "src_id"]})
    edges.add_index({"type": "persistent", "fields": ["tenant_id", "kind"]})
