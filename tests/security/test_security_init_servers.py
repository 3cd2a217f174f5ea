"""`tradingctl security init` against real servers, the way docker-compose.yml runs it:

- the files job, then the PostgreSQL job on a server whose every role, the
  superuser included, must authenticate with scram-sha-256 (as the compose
  PostgreSQL does with POSTGRES_PASSWORD_FILE): the services' login roles
  then work with their own secrets and nothing else;
- a service serving with the certificate init issued, checked the way the
  compose health check does it (`tradingctl health --callee ... --address ...`:
  mTLS as the operator, the server verified by its service name).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from runtime.config import Settings
from runtime.grpc_server import ServiceRunner
from runtime.security.postgres_roles import POSTGRES_GRANTS, app_role, scram_sha_256_verifier
from tools.infra import ManagedProcess, free_port, start_postgres
from tools.security_init import main
from tools.supervisor import check_health

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _env(root: Path, port: int) -> dict[str, str]:
    """docker-compose.yml's settings for init and init-db, with paths under `root`."""
    return {
        "TRADING_ENVIRONMENT": "compose",
        "TRADING_VAR_DIR": str(root / "var"),
        "TRADING_SECURITY__PKI_DIR": str(root / "secrets" / "pki"),
        "TRADING_SECURITY__SECRETS_DIR": str(root / "secrets"),
        "TRADING_POSTGRES__DSN": f"postgresql://postgres@127.0.0.1:{port}/trading",
        "TRADING_POSTGRES__ADMIN_DSN": f"postgresql://postgres@127.0.0.1:{port}/postgres",
        "TRADING_POSTGRES__MIGRATE_ON_START": "false",
    }


def _files_argv(root: Path) -> list[str]:
    return [
        "init",
        f"--admin-dir={root / 'admin'}",
        "--allow-local-ca",
        f"--nats-config={root / 'config' / 'nats-server.conf'}",
        "--nats-listen=0.0.0.0:4222",
        f"--nats-store-dir={root / 'nats'}",
        f"--redis-acl={root / 'config' / 'dragonfly.acl'}",
    ]


@pytest.fixture
def compose_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, int]]:
    port = free_port()
    for key, value in _env(tmp_path, port).items():
        monkeypatch.setenv(key, value)
    yield tmp_path, port


async def _cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)  # main runs its own event loop


@pytest_asyncio.fixture(loop_scope="session")
async def postgres(compose_env: tuple[Path, int]) -> AsyncIterator[ManagedProcess]:
    root, port = compose_env
    proc = await asyncio.to_thread(
        start_postgres,
        port,
        root / "pgdata",
        fast=True,
        log_path=root / "postgres.log",
        hba=["host all all 127.0.0.1/32 trust"],
    )
    try:
        yield proc
    finally:
        await asyncio.to_thread(proc.stop)


async def _require_scram_for_everyone(port: int, migrator: str) -> None:
    """What the pgvector image does with POSTGRES_PASSWORD_FILE: the superuser
    gets that password and every TCP login needs scram-sha-256."""
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=10)
    try:
        await conn.execute(f"ALTER ROLE postgres PASSWORD '{scram_sha_256_verifier(migrator)}'")
        hba = Path(await conn.fetchval("SHOW hba_file"))
        await asyncio.to_thread(hba.write_text, "host all all 127.0.0.1/32 scram-sha-256\n")
        assert await conn.fetchval("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    await asyncio.sleep(0.3)  # the postmaster re-reads pg_hba.conf asynchronously


async def test_init_then_init_db_give_each_service_a_working_login_of_its_own(
    compose_env: tuple[Path, int], postgres: ManagedProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    root, port = compose_env
    assert await _cli(_files_argv(root)) == 0
    migrator = (root / "admin" / "postgres" / "migrator").read_text()
    await _require_scram_for_everyone(port, migrator)
    base = f"postgresql://{{user}}@127.0.0.1:{port}/trading"
    with pytest.raises(asyncpg.InvalidPasswordError):  # no trust left, even for the superuser
        await asyncpg.connect(base.format(user="postgres"), password="wrong", timeout=10)

    # init-db: roles, migrations, grants and login passwords, as the migrator.
    capsys.readouterr()
    assert await _cli(["init", f"--admin-dir={root / 'admin'}", "--migrate", "--skip-files"]) == 0
    out = capsys.readouterr().out
    assert "postgres: database trading created" in out and "migrated" in out
    assert migrator not in out

    secret = {s: (root / "secrets" / "postgres" / s).read_text() for s in POSTGRES_GRANTS}
    for service in POSTGRES_GRANTS:
        conn = await asyncpg.connect(
            base.format(user=app_role(service)), password=secret[service], timeout=10
        )
        try:
            assert await conn.fetchval("SELECT current_user") == app_role(service)
            # Its own schema is there and usable; it is no superuser.
            assert await conn.fetchval("SELECT has_schema_privilege($1, 'USAGE')", service)
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        finally:
            await conn.close()
    # Another service's password, an empty one or none: refused.
    for wrong in (secret["execution"], "", "x" + secret["portfolio"]):
        with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
            await asyncpg.connect(base.format(user=app_role("portfolio")), password=wrong, timeout=10)

    # The roles-only form is idempotent, and applies a rotated secret.
    assert await _cli(["init", f"--admin-dir={root / 'admin'}", "--postgres", "--skip-files"]) == 0
    assert "none (all unchanged)" in capsys.readouterr().out
    rotated = "rotated-" + uuid.uuid4().hex
    (root / "secrets" / "postgres" / "audit").write_text(rotated)
    assert await _cli(["init", f"--admin-dir={root / 'admin'}", "--postgres", "--skip-files"]) == 0
    assert "login password set for audit" in capsys.readouterr().out
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(base.format(user=app_role("audit")), password=secret["audit"], timeout=10)
    conn = await asyncpg.connect(base.format(user=app_role("audit")), password=rotated, timeout=10)
    await conn.close()

    # And a second files run changes nothing the servers read.
    before = {p: p.read_bytes() for p in (root / "config").iterdir()}
    assert await _cli(_files_argv(root)) == 0
    assert {p: p.read_bytes() for p in (root / "config").iterdir()} == before


async def test_the_compose_health_check_passes_with_init_certificates(compose_env: tuple[Path, int]) -> None:
    root, _ = compose_env
    assert await _cli(_files_argv(root)) == 0
    settings = Settings()  # the compose environment: reads the files, generates nothing
    assert settings.environment == "compose"
    runner = ServiceRunner("risk", settings, lambda server: [], address="127.0.0.1:0", metrics_port=-1)
    await runner.start()
    try:
        address = f"127.0.0.1:{runner.port}"
        assert await check_health(settings, "risk", address, timeout=5) == 1  # SERVING
        # The server must prove it is the service named: risk's certificate is no audit's.
        assert await check_health(settings, "audit", address, timeout=5) == 0
    finally:
        await runner.stop(grace=0)
    # Nothing was generated next to what init made (a service never writes there).
    assert not (root / "var" / "pki").exists() and not (root / "var" / "secrets").exists()
