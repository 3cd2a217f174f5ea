"""The vector storage port: embeddings of one scope, found again by similarity.

A record is an embedding with an id (a UUID string), the symbol and the
time it describes, and a small JSON payload (numbers, strings, booleans).
Every call names its **scope**: :data:`MARKET` for market data (shared by
every tenant: decision's market states), or a tenant id for a tenant's own
records. A call sees its scope only: the same id in two scopes is two
records, and a search in one scope never returns another's.

- :meth:`VectorStore.upsert` writes records (a known id is replaced);
- :meth:`VectorStore.search` returns the ``k`` records most similar to a
  vector by **cosine similarity** (1: same direction, 0: orthogonal, -1:
  opposite), most similar first, optionally only of one symbol and of a time
  range ``[start, end)``. Adapters may answer approximately (HNSW indexes):
  the recall is measured in bench/results/vectors.md;
- :meth:`VectorStore.delete_older_than` is the retention: records of the
  scope whose time is before a cutoff.

Two adapters pass one test suite (tests/integration/storage/test_vector_port.py):
:class:`runtime.vectors.pgvector.PgVectorStore` (PostgreSQL with pgvector,
the default) and :class:`runtime.vectors.weaviate.WeaviateVectorStore`.
Both subclass :class:`CheckedSearch`, which checks a search's arguments and
orders its results for them.
"""

from __future__ import annotations

import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# The scope of market data: decision's market states, shared by every tenant.
MARKET = "market"
# Scopes are "market" or tenant ids: short, and usable as a Weaviate tenant name.
_SCOPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Most neighbours one search returns.
MAX_K = 1000

PayloadValue = str | int | float | bool | None


def check_scope(scope: str) -> str:
    if not _SCOPE.fullmatch(scope):
        raise ValueError(f"bad scope {scope!r}: 'market' or a tenant id of [A-Za-z0-9_-], 1-64 characters")
    return scope


def check_vector(vector: Sequence[float], dimension: int) -> list[float]:
    values = [float(x) for x in vector]
    if len(values) != dimension:
        raise ValueError(f"expected {dimension} dimensions, got {len(values)}")
    if not all(math.isfinite(x) for x in values):
        raise ValueError("vector holds a NaN or infinite value")
    return values


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """One stored embedding."""

    id: str  # a UUID, chosen by the writer (deterministic ids make writes idempotent)
    symbol: str
    at: datetime  # timezone-aware
    vector: Sequence[float] = field(repr=False)
    payload: Mapping[str, PayloadValue] = field(default_factory=dict)

    def check(self, dimension: int) -> None:
        uuid.UUID(self.id)  # ValueError when not a UUID
        if self.at.tzinfo is None:
            raise ValueError("record time must be timezone-aware")
        if not self.symbol:
            raise ValueError("record symbol must not be empty")
        check_vector(self.vector, dimension)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A record found by a search (its vector is not returned) and its similarity."""

    id: str
    symbol: str
    at: datetime
    payload: Mapping[str, PayloadValue]
    similarity: float


class VectorStore(Protocol):
    """Embeddings of fixed dimension, per scope (see the module docstring)."""

    @property
    def dimension(self) -> int: ...

    async def upsert(self, scope: str, records: Sequence[VectorRecord]) -> None:
        """Write `records` into `scope` (a known id is replaced)."""
        ...

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
        """The `k` records of `scope` most similar to `vector`, most similar
        first; only of `symbol` and with ``start <= at < end`` when given."""
        ...

    async def delete_older_than(self, scope: str, before: datetime) -> int:
        """Delete the records of `scope` with ``at < before``; returns how many."""
        ...

    async def count(self, scope: str) -> int:
        """How many records `scope` holds."""
        ...

    async def close(self) -> None: ...


class CheckedSearch(ABC):
    """:meth:`VectorStore.search` of an adapter: the arguments checked here,
    the records found by the adapter's :meth:`_nearest`, ordered here."""

    @property
    @abstractmethod
    def dimension(self) -> int: ...

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
        """See :meth:`VectorStore.search`."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be 1 to {MAX_K}")
        found = await self._nearest(
            scope, check_vector(vector, self.dimension), k, symbol=symbol, start=start, end=end
        )
        # Approximate (HNSW) answers may come a few out of order.
        found.sort(key=lambda n: -n.similarity)
        return found

    @abstractmethod
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
        """The `k` records of `scope` nearest `query` (checked: 1 <= k <= MAX_K,
        the store's dimension, finite), of `symbol` and ``start <= at < end``
        when given; in any order."""
