"""The platform's relationship graph: one port, two adapters chosen by config.

:mod:`runtime.graph.port` is the port (:class:`GraphStore`, whose
``subgraph`` both adapters inherit); :mod:`runtime.graph.postgres` the
default adapter (tables in the owning service's schema, row-level security);
:mod:`runtime.graph.arango` the ArangoDB one, used when
``settings.graph.arango_url`` is set (``TRADING_GRAPH__ARANGO_URL``;
``http://user:password@host:8529``, or the password from the secret
``arango/<service>``).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from runtime.config import Settings
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
    SubgraphPage,
    Walk,
)
from runtime.graph.postgres import PostgresGraphStore

__all__ = [
    "DEFAULT_MAX_NODES",
    "Cursor",
    "Direction",
    "Edge",
    "GraphReader",
    "GraphStore",
    "Neighbour",
    "Node",
    "NodeKey",
    "PostgresGraphStore",
    "SubgraphPage",
    "Walk",
    "open_graph_store",
]

# The secret system of the ArangoDB password: get_secret(settings, ARANGO_SECRET, service).
ARANGO_SECRET = "arango"


async def open_graph_store(
    settings: Settings, service: str, *, postgres: asyncpg.Pool | None, schema: str
) -> GraphStore:
    """The graph adapter the settings select: ArangoDB when
    ``settings.graph.arango_url`` is set, else PostgreSQL (`postgres`, the
    tables of `schema`)."""
    graph = settings.graph
    if graph.arango_url:
        # Imported here: deployments without ArangoDB never load its driver.
        from runtime.graph.arango import ArangoGraphStore
        from runtime.security.secrets import get_secret

        # Credentials in the URL (as compose gives ClickHouse's) win over the
        # configured user and the secret.
        url = urlsplit(graph.arango_url)
        username, password = url.username, url.password
        if password is None:
            password = get_secret(settings, ARANGO_SECRET, service)
        host = url.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if url.port is not None:
            netloc += f":{url.port}"
        return await ArangoGraphStore.connect(
            urlunsplit(url._replace(netloc=netloc)),
            database=graph.arango_database,
            username=unquote(username) if username else graph.arango_username,
            password=unquote(password),
        )
    if postgres is None:
        raise ValueError(f"{service}: the PostgreSQL graph adapter needs the service's pool")
    return PostgresGraphStore(postgres, schema=schema)
