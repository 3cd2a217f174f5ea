"""ClickHouse port for analytics, with one adapter for both backends.

:class:`ClickHouseClient` is the port services depend on. :class:`ConnectClickHouse`
implements it over clickhouse-connect, whose one client speaks to a real
server over HTTP (``http://host:8123``, production) or to the in-process chdb
engine (``chdb:///dir``, local and tests): same SQL, same types. The library
is synchronous, so each call runs in a worker thread.

chdb can open only one engine path per process; :func:`create_clickhouse`
refuses a second, different path with a clear error instead of chdb's.

Every call is timed, worker thread and (chdb) lock wait included, into
``trading_clickhouse_client_seconds`` (runtime.storage.metrics).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import clickhouse_connect

from runtime.config import ClickHouseSettings
from runtime.storage.metrics import CLICKHOUSE, ClientObserver, StoreClientMetrics, default_store_metrics


@dataclass(frozen=True)
class QueryRows:
    """Rows of a query and the names of their columns."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


class ClickHouseClient(Protocol):
    """What services need from ClickHouse."""

    async def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run DDL or a statement without a result set; returns the server's summary value."""
        ...

    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryRows:
        """Run a SELECT with server-side ``{name:Type}`` parameters."""
        ...

    async def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: Mapping[str, Any] | None = None,
    ) -> int:
        """Insert rows (row-oriented) and return how many were written.
        `settings` are ClickHouse settings of this insert only (e.g.
        ``insert_deduplication_token``)."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class ConnectClickHouse:
    """:class:`ClickHouseClient` over a clickhouse-connect client (HTTP or chdb)."""

    def __init__(self, client: Any, *, serialize: bool, observer: ClientObserver | None = None) -> None:
        self._client = client
        # The chdb engine is one in-process session: run its calls one at a time.
        # HTTP calls are independent requests and may overlap.
        self._lock: threading.Lock | None = threading.Lock() if serialize else None
        self._observer = observer or default_store_metrics().observer(CLICKHOUSE, "trading")

    async def _timed(self, operation: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in a worker thread, timed as `operation`."""
        start = time.perf_counter()
        try:
            result = await asyncio.to_thread(self._call, fn, *args, **kwargs)
        except BaseException:
            self._observer.observe(operation, False, time.perf_counter() - start)
            raise
        self._observer.observe(operation, True, time.perf_counter() - start)
        return result

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._lock is None:
            return fn(*args, **kwargs)
        with self._lock:
            return fn(*args, **kwargs)

    @property
    def database(self) -> str:
        return str(self._client.database)

    async def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        params = dict(parameters) if parameters is not None else None
        return await self._timed("command", self._client.command, sql, parameters=params)

    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryRows:
        params = dict(parameters) if parameters is not None else None
        result = await self._timed("query", self._client.query, sql, parameters=params)
        return QueryRows(tuple(result.column_names), [tuple(r) for r in result.result_rows])

    async def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: Mapping[str, Any] | None = None,
    ) -> int:
        if not rows:
            return 0
        summary = await self._timed(
            "insert",
            self._client.insert,
            table,
            rows,
            column_names=list(column_names),
            settings=dict(settings) if settings is not None else None,
        )
        return int(summary.written_rows)

    async def ping(self) -> bool:
        return bool(await self._timed("ping", self._client.ping))

    async def close(self) -> None:
        await asyncio.to_thread(self._call, self._client.close)


_chdb_guard = threading.Lock()
_chdb_path: Path | None = None


def _claim_chdb_path(path: Path) -> None:
    global _chdb_path
    with _chdb_guard:
        if _chdb_path is None:
            _chdb_path = path
        elif _chdb_path != path:
            raise RuntimeError(
                f"chdb is already open at {_chdb_path} in this process; it cannot also open {path} "
                "(one engine path per process: use one ClickHouseSettings.chdb_path)"
            )


def _open(settings: ClickHouseSettings) -> tuple[Any, bool]:
    if settings.url:
        # No session id: sessions forbid concurrent queries on one client.
        return clickhouse_connect.get_client(dsn=settings.url, autogenerate_session_id=False), False
    path = settings.chdb_path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    _claim_chdb_path(path)
    return clickhouse_connect.get_client(dsn=f"chdb:///{path}"), True


async def create_clickhouse(
    settings: ClickHouseSettings,
    *,
    database: str | None = None,
    service: str = "trading",
    metrics: StoreClientMetrics | None = None,
) -> ConnectClickHouse:
    """A client for `settings.url`, or for chdb at `settings.chdb_path` when the url is empty.

    The database (`database`, default `settings.database`) is created if
    missing and used for unqualified table names. Calls are timed with
    ``service`` = `service`; `metrics` replaces the default registry's.
    """
    db = database or settings.database
    if not db.replace("_", "").isalnum():
        raise ValueError(f"invalid ClickHouse database name {db!r}")
    client, serialize = await asyncio.to_thread(_open, settings)
    observer = (metrics or default_store_metrics()).observer(CLICKHOUSE, service)
    adapter = ConnectClickHouse(client, serialize=serialize, observer=observer)
    await adapter.command(f"CREATE DATABASE IF NOT EXISTS `{db}`")
    client.database = db
    return adapter
