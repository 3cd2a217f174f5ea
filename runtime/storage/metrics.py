"""Client-side latency of the data stores: PostgreSQL, Redis and ClickHouse.

One histogram per store, each labelled by

- ``service``: who the client belongs to (the pool's ``application_name``,
  the Redis ACL user / principal, the ClickHouse client's owner);
- ``operation``: PostgreSQL ``query`` (statements returning rows: SELECT,
  WITH, VALUES, SHOW, TABLE, FETCH, EXPLAIN), ``execute`` (INSERT, UPDATE,
  DELETE, DDL, SET and the rest) or ``transaction`` (BEGIN, COMMIT, ROLLBACK,
  SAVEPOINT, RELEASE); Redis the command name (``GET``, ``EVALSHA``, ...) or
  ``PIPELINE`` / ``MULTI`` for a pipeline sent as one; ClickHouse ``query``,
  ``insert``, ``command`` or ``ping``;
- ``outcome``: ``ok`` or ``error`` (the call raised, a timeout or a
  cancellation included).

Every label value is from a bounded set: never keys, SQL text or tenants.
The recording is done where each client is made (runtime.storage.postgres,
runtime.storage.redis, runtime.storage.clickhouse), through the libraries'
own hooks where they have one: asyncpg's per-connection query logger, a
``redis.asyncio.Redis`` subclass around its ``execute_command`` and its
pipelines' ``execute``, and the ClickHouse adapter's methods.

Cost per call: a labelled child is looked up in a dict (cached per
operation and outcome) and observed. Measured on the 2-core development
machine (uvloop, best of 5 runs of 20,000 calls, the store itself replaced
by a no-op; tests/unit/runtime/test_store_metrics.py repeats it and prints
the numbers): 0.7-1.2 us per observation, 1.1-1.2 us added to a Redis
command (subclass frame, two ``perf_counter`` and the observation), 2.8-3.4
us added to a PostgreSQL statement (asyncpg's query-logger context, its
record, ``call_soon`` and the callback); a ClickHouse call adds about 1.2 us
to a worker-thread hop of tens of microseconds. Against the round trips they
time (a loopback Redis GET ~60 us, a PostgreSQL point select ~80 us) that is
2-4%.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Histogram

# 50 us .. 10 s: a Redis GET on loopback (~60 us) to a slow ClickHouse scan.
CLIENT_LATENCY_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

POSTGRES: Final = "postgres"
REDIS: Final = "redis"
CLICKHOUSE: Final = "clickhouse"

# A client whose operation names are not from a small set (a bug) still
# records, but stops caching children beyond this many.
_MAX_CACHED = 512


class StoreClientMetrics:
    """The three store histograms, registered once per Prometheus registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        labels = ("service", "operation", "outcome")
        self.histograms: dict[str, Histogram] = {
            POSTGRES: Histogram(
                "trading_postgres_client_seconds",
                "PostgreSQL statements as the client saw them (asyncpg), by kind and outcome.",
                labels,
                buckets=CLIENT_LATENCY_BUCKETS,
                registry=reg,
            ),
            REDIS: Histogram(
                "trading_redis_client_seconds",
                "Redis commands and pipelines as the client saw them (redis-py), retries included.",
                labels,
                buckets=CLIENT_LATENCY_BUCKETS,
                registry=reg,
            ),
            CLICKHOUSE: Histogram(
                "trading_clickhouse_client_seconds",
                "ClickHouse calls as the client saw them (clickhouse-connect, worker thread included).",
                labels,
                buckets=CLIENT_LATENCY_BUCKETS,
                registry=reg,
            ),
        }

    def observer(self, store: str, service: str) -> ClientObserver:
        """The recorder of one client of `store` belonging to `service`."""
        return ClientObserver(self.histograms[store], service)


class ClientObserver:
    """Records the calls of one client; caches the labelled children."""

    __slots__ = ("_children", "_histogram", "service")

    def __init__(self, histogram: Histogram, service: str) -> None:
        self._histogram = histogram
        self.service = service
        # (operation, ok) -> labelled child: `.labels()` takes a lock and builds
        # a tuple on every call; a dict hit is cheaper.
        self._children: dict[tuple[str, bool], Histogram] = {}

    def observe(self, operation: str, ok: bool, seconds: float) -> None:
        child = self._children.get((operation, ok))
        if child is None:
            child = self._histogram.labels(self.service, operation, "ok" if ok else "error")
            if len(self._children) < _MAX_CACHED:
                self._children[(operation, ok)] = child
        child.observe(seconds)


@cache
def default_store_metrics() -> StoreClientMetrics:
    """The store metrics on the default Prometheus registry (what /metrics serves)."""
    return StoreClientMetrics()


# ---- PostgreSQL statement kinds --------------------------------------------------------------

_LEADING_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]+)", re.DOTALL)
_READS: Final = frozenset({"SELECT", "WITH", "VALUES", "SHOW", "TABLE", "FETCH", "EXPLAIN"})
_TRANSACTION: Final = frozenset(
    {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
)
_kinds: dict[str, str] = {}


def statement_kind(sql: str) -> str:
    """``query``, ``execute`` or ``transaction``: the ``operation`` label of a
    PostgreSQL statement, from its first keyword (cached per statement text)."""
    kind = _kinds.get(sql)
    if kind is None:
        match = _LEADING_WORD.match(sql)
        word = match.group(1).upper() if match else ""
        kind = "query" if word in _READS else "transaction" if word in _TRANSACTION else "execute"
        if len(_kinds) < 4096:  # statement texts are constants; a flood of dynamic SQL is not cached
            _kinds[sql] = kind
    return kind
