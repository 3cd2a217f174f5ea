"""Credentials per service on the real data stores: a service's own Redis or
PostgreSQL credentials used on another service's keys or tables are refused
and change nothing; the default Redis user is off; the application role does
not own its tables; row-level security still holds; a wrong PostgreSQL
password is refused where the server authenticates (an embedded cluster with
scram-sha-256); and what tansu's authentication does and cannot do.

The shared PostgreSQL of this machine trusts every loopback connection, so a
wrong password is accepted there: the cross-service tests rely on privileges
(permission denied), which hold whatever the authentication method.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from runtime.config import Settings
from runtime.resources import Resources, migrate_service, open_postgres
from runtime.security.postgres_roles import POSTGRES_GRANTS, app_role, owner_role, tenant_role
from runtime.security.secrets import secret_path
from runtime.security.store_credentials import open_redis, postgres_dsn, postgres_password
from runtime.storage.postgres import TENANT_ROLE, tenant_transaction
from runtime.storage.redis import create_redis, tenant_key
from tools.infra import ManagedProcess, ensure_database, find_tansu_binary, free_port, start_postgres

# ====================================================================== Redis


async def _raw(settings: Settings, *commands: tuple[str, ...]) -> list[bytes]:
    """Send RESP commands on one bare connection (no client library
    handshake); the first line of each reply."""
    host, port = settings.redis.url.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    replies = []
    try:
        for command in commands:
            parts = [f"*{len(command)}\r\n".encode()]
            for arg in command:
                parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
            writer.write(b"".join(parts))
            await writer.drain()
            replies.append(await asyncio.wait_for(reader.readline(), 5))
    finally:
        writer.close()
        await writer.wait_closed()
    return replies


async def test_a_connection_without_credentials_can_do_nothing(
    infra_settings: Settings, redis_client: Redis
) -> None:
    key = f"md:quote:probe-{uuid.uuid4().hex[:8]}"
    get, set_, auth, flush = await _raw(
        infra_settings,
        ("GET", key),
        ("SET", key, "forged"),
        ("AUTH", "default", "anything"),
        ("FLUSHALL",),
    )
    assert get.startswith(b"-NOAUTH") and set_.startswith(b"-NOAUTH") and flush.startswith(b"-NOAUTH")
    assert auth.startswith(b"-WRONGPASS")
    assert await redis_client.exists(key) == 0
    # The client library is refused at its handshake.
    anonymous = create_redis(infra_settings.redis)
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            await anonymous.get(key)
    finally:
        await anonymous.aclose()


async def test_a_wrong_or_borrowed_password_is_refused(infra_settings: Settings) -> None:
    gateway_password = open_redis(infra_settings, "gateway").connection_pool.connection_kwargs["password"]
    for username, password in (("risk", "not-the-password"), ("risk", gateway_password), ("nobody", "x")):
        client = create_redis(infra_settings.redis, username=username, password=password)
        try:
            with pytest.raises(AuthenticationError):
                await client.ping()
        finally:
            await client.aclose()


@pytest_asyncio.fixture
async def redis_as() -> AsyncIterator[Callable[[Settings, str], Redis]]:
    opened: list[Redis] = []

    def connect(settings: Settings, principal: str) -> Redis:
        client = open_redis(settings, principal)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.aclose()


# (principal, command, key): each is another service's key, or a key the principal may only read.
FOREIGN_WRITES = [
    ("risk", ("SET", "{key}", "forged"), "t:{{{tenant}}}:gateway:ratelimit"),
    ("gateway", ("SET", "{key}", "forged"), "t:{{{tenant}}}:risk:limits"),
    ("gateway", ("SET", "{key}", "forged"), "identity:apikey:{tenant}"),
    ("execution", ("SET", "{key}", "forged"), "md:quote:{tenant}"),
    ("features", ("SET", "{key}", "forged"), "md:quote:{tenant}"),
    ("identity", ("SET", "{key}", "forged"), "t:{{{tenant}}}:risk:state"),
    ("marketdata", ("SET", "{key}", "forged"), "identity:login_failures:{tenant}"),
    ("portfolio", ("DEL", "{key}"), "md:quote:{tenant}"),
]


@pytest.mark.parametrize(("principal", "command", "pattern"), FOREIGN_WRITES)
async def test_a_service_cannot_write_another_services_keys(
    infra_settings: Settings,
    redis_client: Redis,
    redis_as: Callable[[Settings, str], Redis],
    principal: str,
    command: tuple[str, ...],
    pattern: str,
) -> None:
    key = pattern.format(tenant=f"t-{uuid.uuid4().hex[:8]}")
    await redis_client.set(key, b"original", ex=60)
    client = redis_as(infra_settings, principal)
    with pytest.raises(NoPermissionError):
        await client.execute_command(*(part.format(key=key) for part in command))  # type: ignore[no-untyped-call]
    assert await redis_client.get(key) == b"original"


@pytest.mark.parametrize(
    ("principal", "key"),
    [
        ("portfolio", "identity:apikey:{tenant}"),
        ("marketdata", "t:{{{tenant}}}:risk:pos"),
        ("risk", "t:{{{tenant}}}:gateway:idem:ab12"),
        ("decision", "md:quote:{tenant}"),
        ("gateway", "identity:login_failures:{tenant}"),
    ],
)
async def test_a_service_cannot_read_another_services_keys(
    infra_settings: Settings,
    redis_client: Redis,
    redis_as: Callable[[Settings, str], Redis],
    principal: str,
    key: str,
) -> None:
    key = key.format(tenant=f"t-{uuid.uuid4().hex[:8]}")
    await redis_client.set(key, b"secret", ex=60)
    with pytest.raises(NoPermissionError):
        await redis_as(infra_settings, principal).get(key)


async def test_a_script_cannot_reach_keys_or_commands_its_user_lacks(
    infra_settings: Settings, redis_client: Redis, redis_as: Callable[[Settings, str], Redis]
) -> None:
    """risk may load and run scripts: the ACL still applies to every call inside them."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    own, foreign = tenant_key(tenant, "risk", "limits"), tenant_key(tenant, "gateway", "ratelimit")
    await redis_client.set(foreign, b"original", ex=60)
    risk = redis_as(infra_settings, "risk")
    sha = await risk.script_load("return redis.call('SET', KEYS[1], ARGV[1])")
    with pytest.raises(NoPermissionError):
        await risk.evalsha(sha, 1, foreign, "forged")  # a declared foreign key
    undeclared = await risk.script_load(f"return redis.call('SET', '{foreign}', 'forged')")
    with pytest.raises(ResponseError, match=r"(?i)no permissions|NOPERM|can't access|can't run"):
        await risk.evalsha(undeclared, 1, own)  # a foreign key inside the script
    flush = await risk.script_load("return redis.call('FLUSHALL')")
    with pytest.raises(ResponseError, match=r"(?i)no permissions|NOPERM|can't access|can't run"):
        await risk.evalsha(flush, 1, own)
    with pytest.raises(NoPermissionError):
        await risk.eval("return 1", 0)  # EVAL of ad-hoc code is not risk's
    assert await redis_client.get(foreign) == b"original"


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "requirepass"), ("ACL", "LIST"), ("CLIENT", "LIST"),
     ("SCRIPT", "FLUSH"), ("SHUTDOWN",), ("SELECT", "1"), ("MONITOR",)],
)  # fmt: skip
async def test_no_service_user_may_run_administrative_commands(
    infra_settings: Settings, redis_as: Callable[[Settings, str], Redis], command: tuple[str, ...]
) -> None:
    for principal in ("risk", "gateway", "identity"):
        with pytest.raises(NoPermissionError):
            await redis_as(infra_settings, principal).execute_command(*command)  # type: ignore[no-untyped-call]


async def test_a_service_process_connects_as_its_own_user(
    infra_settings: Settings, redis_client: Redis
) -> None:
    resources = Resources.for_service(infra_settings, "risk", ["redis"])
    await resources.open(timeout_s=10)
    try:
        assert resources.redis is not None
        await resources.redis.ping()
        users = {c["user"] for c in await redis_client.client_list()}
        assert "risk" in users and "default" not in users
    finally:
        await resources.close()


# ====================================================================== PostgreSQL


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app_pools(infra_settings: Settings) -> AsyncIterator[dict[str, asyncpg.Pool]]:
    """Each service's own pool (its login role), migrated as the services do at start."""
    pools: dict[str, asyncpg.Pool] = {}
    try:
        for service in POSTGRES_GRANTS:
            pools[service] = await open_postgres(infra_settings, service)
        yield pools
    finally:
        for pool in pools.values():
            await pool.close()


async def _count(admin: asyncpg.Pool, table: str) -> int:
    async with admin.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


# (service whose credentials are used, another service's table, a statement on it)
CROSS_SERVICE = [
    ("execution", "portfolio.accounts", "SELECT * FROM portfolio.accounts"),
    ("execution", "portfolio.positions", "DELETE FROM portfolio.positions"),
    ("portfolio", "execution.orders", "UPDATE execution.orders SET status = 4"),
    ("notification", "identity.users", "SELECT password_hash FROM identity.users"),
    ("decision", "identity.signing_keys", "SELECT private_key_enc FROM identity.signing_keys"),
    ("audit", "execution.outbox", "DELETE FROM execution.outbox"),
    ("marketdata", "audit.events", "SELECT * FROM audit.events"),
    ("identity", "decision.strategies", "INSERT INTO decision.strategies (tenant_id) VALUES ('x')"),
]


@pytest.mark.parametrize(("service", "table", "sql"), CROSS_SERVICE)
async def test_a_service_role_cannot_use_another_services_tables(
    app_pools: dict[str, asyncpg.Pool], pg_pool: asyncpg.Pool, service: str, table: str, sql: str
) -> None:
    before = await _count(pg_pool, table)
    pool = app_pools[service]
    # As its login role, and inside its own tenant transactions: both refused.
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(sql)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        async with tenant_transaction(pool, "tenant-a") as conn:
            await conn.execute(sql)
    assert await _count(pg_pool, table) == before


@pytest.mark.parametrize("service", sorted(POSTGRES_GRANTS))
async def test_a_service_cannot_become_another_role(app_pools: dict[str, asyncpg.Pool], service: str) -> None:
    other = "identity" if service != "identity" else "execution"
    async with app_pools[service].acquire() as conn:
        for role in (tenant_role(other), app_role(other), owner_role(service), TENANT_ROLE, "postgres"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied to set role"):
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL ROLE "{role}"')
        facts = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
            " WHERE rolname = current_user"
        )
        assert facts is not None and not any(facts.values())


DDL = [
    "ALTER TABLE {table} ADD COLUMN forged text",
    "DROP TABLE {table}",
    "TRUNCATE {table}",
    "ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
    "DROP POLICY tenant_isolation ON {table}",
    "ALTER TABLE {table} DISABLE TRIGGER ALL",
    "ALTER TABLE {table} OWNER TO CURRENT_USER",
    "CREATE TABLE {schema}.forged (id int)",
]


@pytest.mark.parametrize(("service", "table"), [("execution", "execution.orders"), ("audit", "audit.events")])
async def test_the_app_role_does_not_own_its_tables(
    app_pools: dict[str, asyncpg.Pool], pg_pool: asyncpg.Pool, service: str, table: str
) -> None:
    async with pg_pool.acquire() as admin:
        owner = await admin.fetchval(
            "SELECT relowner::regrole::text FROM pg_class WHERE oid = $1::regclass", table
        )
        schema_owner = await admin.fetchval(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", service
        )
    assert owner == schema_owner == owner_role(service)
    async with app_pools[service].acquire() as conn:
        for statement in DDL:
            sql = statement.format(table=table, schema=service)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(sql)
                pytest.fail(f"{service}'s login role ran: {sql}")
        # A GRANT by a non-owner only warns ("no privileges were granted"): check it changed nothing.
        await conn.execute(f"GRANT ALL ON {table} TO PUBLIC")
        assert not await conn.fetchval("SELECT has_table_privilege('public', $1, 'DELETE')", table)
    async with pg_pool.acquire() as admin:
        assert await admin.fetchval("SELECT relrowsecurity AND relforcerowsecurity FROM pg_class "
                                    "WHERE oid = $1::regclass", table)  # fmt: skip


async def test_the_audit_role_can_only_append(app_pools: dict[str, asyncpg.Pool]) -> None:
    # The lineage graph only grows too: nodes are upserted, edges only inserted, nothing deleted.
    refused = (
        "UPDATE audit.events SET producer = 'x'",
        "DELETE FROM audit.events",
        "UPDATE audit.graph_edges SET at = now()",
        "DELETE FROM audit.graph_edges",
        "DELETE FROM audit.graph_nodes",
        "TRUNCATE audit.graph_nodes",
    )
    async with app_pools["audit"].acquire() as conn:
        for sql in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await conn.execute(sql)


async def test_rls_still_isolates_tenants_under_the_service_roles(
    app_pools: dict[str, asyncpg.Pool], pg_pool: asyncpg.Pool
) -> None:
    a, b = f"ta-{uuid.uuid4().hex[:8]}", f"tb-{uuid.uuid4().hex[:8]}"
    portfolio = app_pools["portfolio"]
    async with tenant_transaction(portfolio, a) as conn:
        assert await conn.fetchval("SELECT current_user") == tenant_role("portfolio")
        await conn.execute(
            "INSERT INTO portfolio.accounts (tenant_id, currency, starting_cash, cash)"
            " VALUES ($1, 'USD', 1, 1)",
            a,
        )
    async with tenant_transaction(portfolio, b) as conn:
        assert await conn.fetchval("SELECT count(*) FROM portfolio.accounts WHERE tenant_id = $1", a) == 0
        assert (
            await conn.execute("UPDATE portfolio.accounts SET cash = 0 WHERE tenant_id = $1", a) == "UPDATE 0"
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(portfolio, b) as conn:
            await conn.execute(
                "INSERT INTO portfolio.accounts (tenant_id, currency, starting_cash, cash) "
                "VALUES ($1, 'USD', 1, 1)",
                f"{a}-forged",
            )

    # execution's login role has a platform policy (its matcher and relay see
    # every tenant); its tenant transactions do not.
    execution = app_pools["execution"]
    async with tenant_transaction(execution, a) as conn:
        await conn.execute(
            "INSERT INTO execution.outbox"
            " (tenant_id, event_id, event_type, destination, partition_key, envelope)"
            " VALUES ($1, $2, 'test', 'kafka', 'k', '\\x00')",
            a,
            uuid.uuid4(),
        )
    async with tenant_transaction(execution, b) as conn:
        assert await conn.fetchval("SELECT count(*) FROM execution.outbox WHERE tenant_id = $1", a) == 0
    async with execution.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM execution.outbox WHERE tenant_id = $1", a) == 1
    async with pg_pool.acquire() as admin:
        assert await admin.fetchval("SELECT cash FROM portfolio.accounts WHERE tenant_id = $1", a) == 1


# ---------------------------------------------------------------- scram-sha-256


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scram_cluster(
    infra_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    """An embedded PostgreSQL that authenticates every role but the migrator with scram-sha-256."""
    root = tmp_path_factory.mktemp("pg-scram")
    for attempt in range(3):  # a spare port can be taken by a parallel run before the postmaster binds it
        port = free_port()
        try:
            proc = await asyncio.to_thread(
                start_postgres,
                port,
                root / "data",
                fast=True,
                log_path=root / "postgres.log",
                hba=["host all postgres 127.0.0.1/32 trust", "host all all 127.0.0.1/32 scram-sha-256"],
            )
            break
        except (RuntimeError, TimeoutError):
            if attempt == 2:
                raise
    try:
        settings = infra_settings.model_copy(
            update={
                "var_dir": root / "var",
                "postgres": infra_settings.postgres.model_copy(
                    update={
                        "dsn": f"postgresql://postgres@127.0.0.1:{port}/trading",
                        "admin_dsn": f"postgresql://postgres@127.0.0.1:{port}/postgres",
                    }
                ),
            }
        )
        await ensure_database(settings.postgres.admin_dsn, "trading")
        yield settings
    finally:
        await asyncio.to_thread(proc.stop)


async def test_scram_refuses_a_wrong_password_and_takes_a_rotated_one(scram_cluster: Settings) -> None:
    settings = scram_cluster
    pool = await open_postgres(settings, "marketdata")  # migrates, sets the password, logs in
    try:
        assert await pool.fetchval("SELECT current_user") == app_role("marketdata")
        dsn = postgres_dsn(settings, "marketdata")
        for wrong in ("not-the-password", postgres_password(settings, "portfolio")(), ""):
            with pytest.raises(
                (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
            ):
                await asyncpg.connect(dsn, password=wrong, timeout=10)

        # Rotation: a new secret, applied by the migrator; the old one is refused
        # at once and the running pool's next connection uses the new one.
        path = secret_path(settings, "postgres", "marketdata")
        old = path.read_text()
        path.write_text("rotated-" + uuid.uuid4().hex)
        await migrate_service(settings, "marketdata")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(dsn, password=old, timeout=10)
        await pool.expire_connections()
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


# ====================================================================== Kafka (tansu)


@pytest.fixture
def tansu_with_auth(tmp_path: Path) -> Iterator[ManagedProcess]:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL")}
    argv = [str(find_tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/", "--authentication"]  # fmt: skip
    proc = ManagedProcess(
        "tansu-auth", argv, host="127.0.0.1", port=port, log_path=tmp_path / "tansu.log", env=env
    )
    proc.start().wait_ready()
    yield proc
    proc.stop()


async def _produce(address: str, **security: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=address, request_timeout_ms=3000, **security)
    try:
        await asyncio.wait_for(producer.start(), 10)
        await producer.send_and_wait("probe", b"x")
    finally:
        await producer.stop()


async def test_tansu_authentication_refuses_clients_and_cannot_be_provisioned(
    tansu_with_auth: ManagedProcess,
) -> None:
    """What tansu 0.6.0 does (docs/security.md): with --authentication it
    cuts off unauthenticated clients and offers no PLAIN; a SCRAM login fails
    (only on aiokafka's side: the broker answers e=unknown-user, since its
    dynostore engine never stores users) and its own `tansu user create` is
    refused: the platform's local Kafka stays unauthenticated."""
    address = tansu_with_auth.address
    with pytest.raises(Exception):  # noqa: B017 - aiokafka: KafkaConnectionError / a SASL error
        await _produce(address)
    with pytest.raises(Exception):  # noqa: B017 - NoSharedMechanism on the broker
        await _produce(address, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                       sasl_plain_username="anyone", sasl_plain_password="anything")  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017 - aiokafka fails parsing the server's SCRAM error (KeyError 'v')
        await _produce(address, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                       sasl_plain_username="execution", sasl_plain_password="wrong")  # fmt: skip
    create = await asyncio.create_subprocess_exec(
        str(find_tansu_binary()), "user", "create", "--broker", f"tcp://{address}", "execution", "pw",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(create.communicate(), 30)
    assert create.returncode != 0, out.decode()
    assert "NotAuthenticated" in tansu_with_auth.log_tail(50)
