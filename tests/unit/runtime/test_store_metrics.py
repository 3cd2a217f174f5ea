"""The data-store client histograms without servers: statement kinds, label
caching, the Redis subclass's recording, and what recording costs per call
(the numbers in runtime/storage/metrics.py's docstring)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import asyncpg
import pytest
from asyncpg.connection import _Callback
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from runtime.storage.metrics import POSTGRES, REDIS, StoreClientMetrics, statement_kind
from runtime.storage.redis import InstrumentedPipeline, InstrumentedRedis


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", "query"),
        ("  select * from t", "query"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "query"),
        ("-- a comment\nSELECT 1", "query"),
        ("/* hint */ VALUES (1)", "query"),
        ("SHOW timezone", "query"),
        ("INSERT INTO t VALUES ($1)", "execute"),
        ("update t set a = 1", "execute"),
        ("DELETE FROM t", "execute"),
        ("CREATE TABLE t (a int)", "execute"),
        ("SELECT set_config($1, $2, true)", "query"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE;", "transaction"),
        ("COMMIT;", "transaction"),
        ("ROLLBACK;", "transaction"),
        ("SAVEPOINT asyncpg_1;", "transaction"),
        ("RELEASE SAVEPOINT asyncpg_1;", "transaction"),
        ("", "execute"),
    ],
)
def test_statement_kind(sql: str, kind: str) -> None:
    assert statement_kind(sql) == kind


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_observer_labels_and_caches_its_children() -> None:
    registry = CollectorRegistry()
    metrics = StoreClientMetrics(registry)
    observer = metrics.observer(POSTGRES, "execution")
    observer.observe("query", True, 0.0002)
    observer.observe("query", True, 0.004)
    observer.observe("execute", False, 0.5)
    name = "trading_postgres_client_seconds"
    assert _value(registry, f"{name}_count", service="execution", operation="query", outcome="ok") == 2
    assert (
        _value(registry, f"{name}_bucket", service="execution", operation="query", outcome="ok", le="0.00025")
        == 1
    )
    assert _value(registry, f"{name}_count", service="execution", operation="execute", outcome="error") == 1
    # Two children cached, looked up again without .labels().
    assert len(observer._children) == 2


class _FakeStore:
    """Stands in for redis-py's own execute path (no server): replies at once,
    or raises for the command named ``FAIL``."""

    @staticmethod
    async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        if args[0] == "FAIL":
            raise ResponseError("ERR wrong kind of value")
        return b"OK"


async def test_redis_commands_and_pipelines_are_timed() -> None:
    registry = CollectorRegistry()
    client = InstrumentedRedis()
    client.observer = StoreClientMetrics(registry).observer(REDIS, "risk")
    with patch.object(Redis, "execute_command", _FakeStore.execute_command):
        assert await client.execute_command("GET", "k") == b"OK"
        assert await client.execute_command("evalsha", "abc", 0) == b"OK"
        with pytest.raises(ResponseError):
            await client.execute_command("FAIL")
    name = "trading_redis_client_seconds_count"
    assert _value(registry, name, service="risk", operation="GET", outcome="ok") == 1
    assert _value(registry, name, service="risk", operation="EVALSHA", outcome="ok") == 1
    assert _value(registry, name, service="risk", operation="FAIL", outcome="error") == 1

    pipe = client.pipeline(transaction=False)
    assert isinstance(pipe, InstrumentedPipeline) and pipe.observer is client.observer
    assert await pipe.execute() == []  # nothing queued: nothing sent, nothing recorded
    assert _value(registry, name, service="risk", operation="PIPELINE", outcome="ok") == 0


def _best_per_call(run: Callable[[int], float], calls: int = 20_000) -> float:
    return min(run(calls) for _ in range(5)) / calls


async def _best_per_call_async(run: Callable[[int], Awaitable[float]], calls: int = 20_000) -> float:
    return min([await run(calls) for _ in range(5)]) / calls


async def test_recording_costs_microseconds() -> None:
    """Measures what the docstring of runtime.storage.metrics states (the store
    replaced by a no-op); the bound is loose: two shared cores are noisy."""
    metrics = StoreClientMetrics(CollectorRegistry())
    observer = metrics.observer(REDIS, "bench")

    def observe(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            observer.observe("GET", True, 0.0001)
        return time.perf_counter() - start

    per_observation = _best_per_call(observe)

    plain, instrumented = Redis(), InstrumentedRedis()
    instrumented.observer = observer

    def commands(client: Redis) -> Callable[[int], Awaitable[float]]:
        async def run(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                await client.execute_command("GET", "k")  # type: ignore[no-untyped-call]
            return time.perf_counter() - start

        return run

    with patch.object(Redis, "execute_command", _FakeStore.execute_command):
        redis_added = await _best_per_call_async(commands(instrumented)) - await _best_per_call_async(
            commands(plain)
        )

    # asyncpg's own query-logger path (Connection._time_and_log) with the
    # logger create_pool installs, on a stand-in connection.
    pg = metrics.observer(POSTGRES, "bench")

    def log_query(record: Any) -> None:
        pg.observe(statement_kind(record.query), record.exception is None, record.elapsed)

    loop = asyncio.get_running_loop()
    logged = SimpleNamespace(
        _query_loggers={_Callback.from_callable(log_query)},
        _addr=("127.0.0.1", 5432),
        _params=None,
        _loop=loop,
    )

    def statements(with_logger: bool) -> Callable[[int], Awaitable[float]]:
        async def run(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                if with_logger:
                    with asyncpg.Connection._time_and_log(logged, "SELECT 1", (), None):
                        pass
                await asyncio.sleep(0)  # the loop turn that runs the logger's callback
            return time.perf_counter() - start

        return run

    pg_added = await _best_per_call_async(statements(True)) - await _best_per_call_async(statements(False))
    print(
        f"\nstore metrics cost: observation {per_observation * 1e6:.2f} us, "
        f"Redis command +{redis_added * 1e6:.2f} us, PostgreSQL statement +{pg_added * 1e6:.2f} us"
    )
    assert per_observation < 20e-6
    assert redis_added < 30e-6
    assert pg_added < 40e-6
