"""The graph storage port: typed nodes and edges of one tenant, and walks over them.

A node is ``(kind, id)`` of one tenant with the time it came to be and a few
string attributes; an edge ``kind`` points from a cause (``src``) to its
effect (``dst``) and has the time of the effect. Every method takes the
tenant and sees that tenant's graph only: the same keys in two tenants are
two unrelated nodes.

Writes are idempotent and commutative, so a consumer may apply events again
and in any order: an upsert of a known node keeps the earliest ``at`` and
merges the attributes; a known edge is left as it is; the nodes at both ends
of an edge exist afterwards (without attributes until their own upsert), so
a walk never meets a dangling edge.

Two adapters pass one test suite (tests/integration/storage/test_graph_port.py):
:class:`runtime.graph.postgres.PostgresGraphStore` (the default; recursive
CTEs under row-level security) and
:class:`runtime.graph.arango.ArangoGraphStore` (AQL traversals, the tenant
an attribute filtered in every query). Both subclass :class:`GraphStore`,
whose ``subgraph`` is a composition of the reads, written once;
PostgreSQL runs it in one transaction (its ``reader``).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

# Largest number of nodes a walk returns unless told otherwise.
DEFAULT_MAX_NODES = 10_000


class Direction(enum.Enum):
    """Which way a walk follows the edges."""

    DOWNSTREAM = "downstream"  # src -> dst: from causes to effects
    UPSTREAM = "upstream"  # dst -> src: from effects to causes


# Keys and edges are named tuples: a walk makes thousands of them, and a
# tuple is built, hashed and compared several times faster than a dataclass.
class NodeKey(NamedTuple):
    """A node's identity within its tenant."""

    kind: str
    id: str


@dataclass(frozen=True, slots=True)
class Node:
    key: NodeKey
    at: datetime
    attrs: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


class Edge(NamedTuple):
    """An edge; its identity is (kind, src, dst): one edge has one time."""

    kind: str
    src: NodeKey
    dst: NodeKey
    at: datetime

    def far(self, direction: Direction) -> NodeKey:
        """The end a walk in `direction` arrives at."""
        return self.dst if direction is Direction.DOWNSTREAM else self.src

    def near(self, direction: Direction) -> NodeKey:
        """The end a walk in `direction` leaves from."""
        return self.src if direction is Direction.DOWNSTREAM else self.dst


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A node next to another and the edge between them."""

    edge: Edge
    node: Node


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of neighbours ended: the last one's edge time and key
    (neighbours are ordered by edge time, then far node kind and id)."""

    at: datetime
    kind: str
    id: str


@dataclass(frozen=True, slots=True)
class Walk:
    """What a walk reached: the nodes (the starts included), the edges it
    followed (and, with causes, the edges into the nodes it reached) and
    whether it stopped at its node limit."""

    nodes: Mapping[NodeKey, Node]
    edges: frozenset[Edge]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class SubgraphPage:
    """One page of :meth:`GraphStore.subgraph`: the root (None when the tenant's graph
    does not have it), the nodes reached (root excluded), the edges among
    them, the cursor of the next page (None on the last) and whether a walk
    stopped at its node limit."""

    root: Node | None
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    next: Cursor | None
    truncated: bool


class GraphReader(Protocol):
    """The reads :meth:`GraphStore.subgraph` is made of."""

    async def node(self, tenant: str, key: NodeKey) -> Node | None:
        """The node, or None when the tenant's graph does not have it."""
        ...

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
        """The nodes one edge away in `direction` (edges of `edge_kinds`,
        None: any; edge time in [start, end), either bound optional), ordered
        by edge time, far node kind and id, after `after`, at most `limit`."""
        ...

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
        """Everything reachable from `starts` in at most `max_depth` edges of
        `edge_kinds` in `direction`. `with_causes` (downstream walks) adds the
        edges into every node reached and their sources, not walked further
        (a signal's model versions, say). Stops after about `max_nodes`
        nodes (then ``truncated``)."""
        ...


class GraphStore(GraphReader, Protocol):
    """The graph storage port (see the module docstring for the rules).

    Adapters subclass it: :meth:`subgraph` is composed of the reads here,
    once for every adapter."""

    async def upsert(self, tenant: str, nodes: Sequence[Node], edges: Sequence[Edge]) -> None:
        """Store `nodes` and `edges` of `tenant` (idempotent, any order)."""
        ...

    async def close(self) -> None: ...

    def reader(self, tenant: str) -> AbstractAsyncContextManager[GraphReader]:
        """The reads one :meth:`subgraph` of `tenant` is made of: this store
        itself, unless an adapter can give them one snapshot (PostgreSQL: one
        tenant transaction)."""
        return nullcontext(self)

    async def subgraph(
        self,
        tenant: str,
        root: NodeKey,
        *,
        direction: Direction,
        max_depth: int,
        start: datetime | None = None,
        end: datetime | None = None,
        edge_kinds: Collection[str] | None = None,
        after: Cursor | None = None,
        limit: int = 50,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> SubgraphPage:
        """The subgraph of `root` within a time range, paged by its direct
        neighbours: at most `limit` of them linked in [start, end) after
        `after`, each with everything the walk reaches from it (at any time)
        within `max_depth` edges of the root; downstream with the causes of
        every node reached. Three reads, through :meth:`reader`."""
        async with self.reader(tenant) as store:
            found = await store.node(tenant, root)
            if found is None:
                return SubgraphPage(None, (), (), None, False)
            first = await store.neighbours(
                tenant,
                root,
                direction=direction,
                edge_kinds=edge_kinds,
                start=start,
                end=end,
                after=after,
                limit=limit + 1,
            )
            page, more = first[:limit], len(first) > limit
            nodes: dict[NodeKey, Node] = {n.node.key: n.node for n in page}
            edges = {n.edge for n in page}
            truncated = False
            if page and max_depth > 1:
                reached = await store.walk(
                    tenant,
                    [n.node.key for n in page],
                    direction=direction,
                    max_depth=max_depth - 1,
                    edge_kinds=edge_kinds,
                    with_causes=direction is Direction.DOWNSTREAM,
                    max_nodes=max_nodes,
                )
                nodes.update(reached.nodes)
                edges |= reached.edges
                truncated = reached.truncated
        nodes.pop(root, None)
        cursor = Cursor(page[-1].edge.at, page[-1].node.key.kind, page[-1].node.key.id) if more else None
        return SubgraphPage(
            found,
            tuple(sorted(nodes.values(), key=lambda n: (n.key.kind, n.at, n.key.id))),
            tuple(sorted(edges, key=lambda e: (e.at, e))),
            cursor,
            truncated,
        )


def check_tenant(tenant: str) -> None:
    """Every call names its tenant; an empty one is a bug upstream."""
    if not tenant:
        raise ValueError("tenant must not be empty")


def merged_nodes(nodes: Iterable[Node], edges: Iterable[Edge]) -> list[Node]:
    """The nodes of one upsert, one per key (earliest time, attributes
    merged), with the edge ends that are not among them as bare nodes;
    sorted by key, so concurrent upserts lock rows in the same order."""
    out: dict[NodeKey, Node] = {}

    def add(node: Node) -> None:
        seen = out.get(node.key)
        if seen is None:
            out[node.key] = node
        else:
            out[node.key] = Node(node.key, min(seen.at, node.at), {**seen.attrs, **node.attrs})

    for node in nodes:
        add(node)
    for edge in edges:
        for end in (edge.src, edge.dst):
            add(Node(end, edge.at))
    return [out[k] for k in sorted(out)]


def unique_edges(edges: Iterable[Edge]) -> list[Edge]:
    """One edge per identity (the first one's time), sorted."""
    out: dict[tuple[str, NodeKey, NodeKey], Edge] = {}
    for edge in edges:
        out.setdefault((edge.kind, edge.src, edge.dst), edge)
    return [out[k] for k in sorted(out)]
