"""The platform's vector storage: one port, two adapters chosen by config.

:mod:`runtime.vectors.port` is the port (:class:`VectorStore`);
:mod:`runtime.vectors.pgvector` the default adapter (PostgreSQL with the
pgvector extension on ``settings.vectors.postgres_dsn``, a table of the
owning service's schema, HNSW, row-level security);
:mod:`runtime.vectors.weaviate` the Weaviate one, used when
``settings.vectors.weaviate_url`` is set (``TRADING_VECTORS__WEAVIATE_URL``).
"""

from __future__ import annotations

from runtime.config import Settings
from runtime.vectors.port import MARKET, MAX_K, Neighbour, PayloadValue, VectorRecord, VectorStore

__all__ = [
    "MARKET",
    "MAX_K",
    "WEAVIATE_SECRET",
    "Neighbour",
    "PayloadValue",
    "VectorRecord",
    "VectorStore",
    "open_vector_store",
]

# The secret system of a Weaviate API key: get_secret(settings, WEAVIATE_SECRET, service).
WEAVIATE_SECRET = "weaviate"


async def open_vector_store(settings: Settings, service: str, *, table: str, dimension: int) -> VectorStore:
    """The adapter the settings select for `service`'s collection `table` of
    `dimension`: Weaviate when ``settings.vectors.weaviate_url`` is set, else pgvector."""
    vectors = settings.vectors
    if vectors.weaviate_url:
        # Imported here: deployments without Weaviate never load its client.
        from runtime.security.secrets import get_secret
        from runtime.vectors.weaviate import WeaviateVectorStore, collection_name

        return await WeaviateVectorStore.connect(
            vectors.weaviate_url,
            name=collection_name(service, table),
            dimension=dimension,
            grpc_port=vectors.weaviate_grpc_port,
            api_key=get_secret(settings, WEAVIATE_SECRET, service) if vectors.weaviate_api_key else None,
            ef_search=vectors.ef_search,
        )
    from runtime.vectors.pgvector import open_pgvector

    return await open_pgvector(settings, service, table=table, dimension=dimension)
