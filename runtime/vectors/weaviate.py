"""Weaviate adapter of the vector port (weaviate-client v4, async API).

ADR-001 names Weaviate for the AI's vector embeddings; deployments that run
it set ``TRADING_VECTORS__WEAVIATE_URL`` (compose does, for decision) and
this adapter replaces pgvector. It passes the same port test suite
(tests/integration/storage/test_vector_port.py) when ``WEAVIATE_URL`` names
a server; no Weaviate can run where CI runs (no server in any reachable
registry), so CI proves the pgvector adapter only.

Layout: one collection per store (e.g. ``DecisionMarketStates``), created
here when missing: vectors provided by the writer (no vectorizer), an HNSW
index with cosine distance; properties ``symbol`` (exact-match text),
``at`` (date) and ``payload`` (JSON text, neither filtered nor searched).

Scopes are Weaviate **tenants** of a multi-tenant collection: every call
goes through ``collection.with_tenant(scope)``, so a scope's objects live in
a shard of their own and a query cannot reach another's. Tenants are made
on first use (and by the server on insert, ``auto_tenant_creation``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import weaviate
from weaviate.classes.config import (
    Configure,
    DataType,
    Property,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.data import DataObject
from weaviate.classes.init import Auth
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.classes.tenants import Tenant
from weaviate.client import WeaviateAsyncClient
from weaviate.collections.collection.async_ import CollectionAsync

from runtime.vectors.port import CheckedSearch, Neighbour, VectorRecord, check_scope

# Objects one delete_many call removes at most (the server's QUERY_MAXIMUM_RESULTS default).
_DELETE_BATCH = 10_000


def collection_name(service: str, table: str) -> str:
    """A Weaviate class name (capitalised) for a service's collection: decision, market_states ->
    DecisionMarketStates."""
    return "".join(part.capitalize() for part in f"{service}_{table}".split("_"))


class WeaviateVectorStore(CheckedSearch):
    """The vector port on one Weaviate collection (see the module docstring)."""

    def __init__(self, client: WeaviateAsyncClient, name: str, dimension: int) -> None:
        self._client = client
        self._collection: CollectionAsync[Any, Any] = client.collections.get(name)
        self._dimension = dimension
        self._tenants: set[str] = set()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        dimension: int,
        grpc_port: int = 50051,
        api_key: str | None = None,
        ef_search: int = 40,
    ) -> WeaviateVectorStore:
        """Connect to the server at `url` and make sure collection `name` exists."""
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        secure = parts.scheme == "https"
        client = weaviate.use_async_with_custom(
            http_host=host,
            http_port=parts.port or (443 if secure else 80),
            http_secure=secure,
            grpc_host=host,
            grpc_port=grpc_port,
            grpc_secure=secure,
            auth_credentials=Auth.api_key(api_key) if api_key else None,
        )
        await client.connect()
        try:
            if not await client.collections.exists(name):
                try:
                    await client.collections.create(
                        name,
                        vector_index_config=Configure.VectorIndex.hnsw(
                            distance_metric=VectorDistances.COSINE,
                            ef=ef_search,
                            ef_construction=64,
                            max_connections=16,
                        ),
                        multi_tenancy_config=Configure.multi_tenancy(enabled=True, auto_tenant_creation=True),
                        properties=[
                            Property(name="symbol", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                            Property(name="at", data_type=DataType.DATE),
                            Property(
                                name="payload",
                                data_type=DataType.TEXT,
                                index_filterable=False,
                                index_searchable=False,
                            ),
                        ],
                    )
                except weaviate.exceptions.UnexpectedStatusCodeError:
                    if not await client.collections.exists(name):  # not a replica's concurrent create
                        raise
        except BaseException:
            await client.close()
            raise
        return cls(client, name, dimension)

    @property
    def dimension(self) -> int:
        return self._dimension

    async def _tenant(self, scope: str) -> CollectionAsync[Any, Any]:
        check_scope(scope)
        if scope not in self._tenants:
            if not await self._collection.tenants.exists(scope):
                await self._collection.tenants.create([Tenant(name=scope)])
            self._tenants.add(scope)
        return self._collection.with_tenant(scope)

    async def upsert(self, scope: str, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        for r in records:
            r.check(self._dimension)
        collection = await self._tenant(scope)
        objects = [
            DataObject(
                properties={
                    "symbol": r.symbol,
                    "at": r.at,
                    "payload": json.dumps(dict(r.payload), separators=(",", ":")),
                },
                uuid=r.id,
                vector=[float(x) for x in r.vector],
            )
            for r in records
        ]
        # A batch replaces objects whose id exists: an upsert.
        result = await collection.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise RuntimeError(
                f"weaviate refused {len(result.errors)} of {len(records)} objects: {first.message}"
            )

    async def _nearest(
        self,
        scope: str,
        query: list[float],
        k: int,
        *,
        symbol: str | None,
        start: datetime | None,
        end: datetime | None,
    ) -> list[Neighbour]:
        filters = []
        if symbol is not None:
            filters.append(Filter.by_property("symbol").equal(symbol))
        if start is not None:
            filters.append(Filter.by_property("at").greater_or_equal(start))
        if end is not None:
            filters.append(Filter.by_property("at").less_than(end))
        collection = await self._tenant(scope)
        response = await collection.query.near_vector(
            near_vector=query,
            limit=k,
            filters=Filter.all_of(filters) if filters else None,
            return_metadata=MetadataQuery(distance=True),
            return_properties=["symbol", "at", "payload"],
        )
        found = []
        for o in response.objects:
            props = o.properties
            at = props["at"]
            if isinstance(at, str):
                at = datetime.fromisoformat(at)
            distance = o.metadata.distance if o.metadata.distance is not None else 1.0
            found.append(
                Neighbour(
                    str(o.uuid),
                    str(props["symbol"]),
                    at.astimezone(UTC),
                    json.loads(str(props.get("payload") or "{}")),
                    1.0 - float(distance),
                )
            )
        return found

    async def delete_older_than(self, scope: str, before: datetime) -> int:
        collection = await self._tenant(scope)
        deleted = 0
        while True:
            result = await collection.data.delete_many(where=Filter.by_property("at").less_than(before))
            deleted += result.successful
            if result.matches < _DELETE_BATCH or result.successful == 0:
                return deleted

    async def count(self, scope: str) -> int:
        collection = await self._tenant(scope)
        result = await collection.aggregate.over_all(total_count=True)
        return int(result.total_count or 0)

    async def close(self) -> None:
        await self._client.close()
