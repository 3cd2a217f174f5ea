"""Shared fixtures: real servers for integration tests, started lazily.

Nothing here runs unless a test asks for it, so unit tests need no server.

- ``infra_settings``: a :class:`runtime.config.Settings` for this test session.
  PostgreSQL: a fresh database on the shared server (dropped at the end).
  Redis: a redis-server of the session's own with the platform's ACL users
  (``redis_client`` is its admin; use unique key prefixes: ``unique_id``
  helps). NATS: a nats-server of the session on a spare port, with the
  platform's users and permissions (secrets in the session's var dir) plus the
  test harness user (``tests.support.nats.connect_harness``); tests still use
  unique subjects and stream names. Kafka: a tansu broker started for the
  session on a spare port, storing on the session's own SeaweedFS (S3).
  ClickHouse: chdb in a temp dir. If a shared server does not answer (a bare
  machine), an embedded one is started in its place.
- chdb opens one engine path per process: every test in the session must use
  ``infra_settings.clickhouse`` (or the ``clickhouse`` fixture), never its own path.
- Vectors (``infra_settings.vectors``): an embedded PostgreSQL 18 with pgvector
  of the session's own (the shared server has no pgvector), gone with the session.
- Tests under ``tests/integration``, ``tests/security`` and ``tests/faults`` get the ``integration``
  marker automatically.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from runtime.config import Settings
from runtime.security.pki import ensure_pki
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from runtime.storage.clickhouse import ConnectClickHouse, create_clickhouse
from runtime.storage.postgres import create_pool
from tests.support.security import use_session_settings
from tools.infra import (
    LocalInfra,
    ManagedProcess,
    drop_database,
    free_port,
    start_tansu,
)

# Tests under these directories run against real servers.
_INTEGRATION_DIRS = tuple(Path(__file__).parent / d for d in ("integration", "security", "faults"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(d in Path(str(item.path)).parents for d in _INTEGRATION_DIRS):
            item.add_marker(pytest.mark.integration)


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """The session's shared tansu broker; ``tansu.address`` is the bootstrap string.

    On memory storage on purpose: it is a throwaway broker that hundreds of
    messaging tests share, where durability is not under test and S3's write
    and read-after-write latency only slows them and makes them flaky.
    Durability is: the fault scenarios (tests/faults) run tansu on S3, kill
    it and count every record, as do `./dev run` and the benchmark."""
    proc = start_tansu(free_port(), log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    yield proc
    proc.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def infra_settings(
    tansu: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    base = Settings()
    var_dir = tmp_path_factory.mktemp("var")
    db_name = f"test_{uuid.uuid4().hex[:12]}"
    assert tansu.port is not None
    settings = base.model_copy(
        update={
            "var_dir": var_dir,
            "postgres": base.postgres.model_copy(update={"dsn": _with_database(base.postgres.dsn, db_name)}),
            # The session's own redis-server (ACL users from this session's secrets).
            "redis": base.redis.model_copy(update={"url": f"redis://127.0.0.1:{free_port()}/0"}),
            # Platforms the tests start (isolated_settings) inherit memory
            # storage for their own tansu: throwaway brokers, and SeaweedFS
            # per platform would double the suite's CPU on 2 cores. The fault
            # scenarios (tests/faults) and every `./dev run` and benchmark
            # platform store on S3.
            "kafka": base.kafka.model_copy(
                update={"bootstrap_servers": tansu.address, "local_port": tansu.port, "storage": "memory"}
            ),
            # The session's own nats-server (LocalInfra starts it, nothing
            # answers there), with its users from the session's var dir, plus
            # the test harness user (runtime.security.nats_permissions.HARNESS).
            "nats": base.nats.model_copy(
                update={"url": f"nats://127.0.0.1:{free_port()}", "test_harness": True}
            ),
            "clickhouse": base.clickhouse.model_copy(update={"url": "", "chdb_path": var_dir / "chdb"}),
            # Vectors need pgvector, which the shared PostgreSQL lacks: the
            # session's own embedded PostgreSQL 18 (LocalInfra starts it, nothing answers there).
            "vectors": base.vectors.model_copy(
                update={"postgres_dsn": f"postgresql://postgres@127.0.0.1:{free_port()}/{db_name}"}
            ),
        }
    )
    ensure_pki(settings.security.pki_path(var_dir), settings.security.trust_domain)
    use_session_settings(settings)
    infra = LocalInfra(settings, log_dir=var_dir / "log", fast=True)
    await infra.start()
    try:
        yield settings
    finally:
        try:
            await drop_database(settings.postgres.admin_dsn, db_name)
        finally:
            await asyncio.to_thread(infra.stop)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_pool(infra_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session's test database."""
    pool = await create_pool(infra_settings.postgres, application_name="tests")
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_client(infra_settings: Settings) -> AsyncIterator[Redis]:
    """The session's Redis as the admin user (every key; services log in as themselves)."""
    client = open_redis(infra_settings, REDIS_ADMIN)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def clickhouse(infra_settings: Settings) -> AsyncIterator[ConnectClickHouse]:
    """chdb in the session's temp dir, database ``infra_settings.clickhouse.database``."""
    client = await create_clickhouse(infra_settings.clickhouse)
    yield client
    await client.close()


@pytest.fixture
def unique_id() -> str:
    """A short unique token for key prefixes, tenant ids, topic and stream names."""
    return uuid.uuid4().hex[:12]


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _dump_tasks_when_stuck(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Diagnostics: if a test runs for over 60 s, print every asyncio task's
    stack (pytest-timeout only shows threads, which says nothing about
    which await a hung async test is stuck in)."""
    import sys

    def dump() -> None:
        print(f"\n=== asyncio tasks after 60 s in {request.node.nodeid} ===", file=sys.stderr)
        for task in asyncio.all_tasks():
            task.print_stack(limit=8, file=sys.stderr)

    handle = asyncio.get_running_loop().call_later(60, dump)
    try:
        yield
    finally:
        handle.cancel()
