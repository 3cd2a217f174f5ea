"""PostgreSQL connection pool and the tenant-scoped transaction helper.

Row-level security is the last line of tenant isolation. Tenant tables carry a
``tenant_id text`` column and a policy such as::

    ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
    ALTER TABLE orders FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON orders
        USING (tenant_id = current_setting('app.tenant_id'))
        WITH CHECK (tenant_id = current_setting('app.tenant_id'));

(:func:`tenant_rls_sql` writes exactly that.) Superusers and roles with
BYPASSRLS ignore every policy, and a service's login role may hold a
platform policy on some of its tables (``service_role``), so
:func:`tenant_transaction` also switches, for the transaction only
(``SET LOCAL ROLE``), to the pool's tenant role: ``trading_<svc>_tenant``
for a service's pool (set by :func:`create_pool` as the session setting
:data:`TENANT_ROLE_SETTING`; see :mod:`runtime.security.postgres_roles`),
else the umbrella :data:`TENANT_ROLE` (superuser pools of tests and tools).
Neither bypasses RLS, so policies hold whatever user the service logs in as.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from runtime.config import PostgresSettings
from runtime.storage.metrics import POSTGRES, StoreClientMetrics, default_store_metrics, statement_kind

log = logging.getLogger(__name__)

# NOLOGIN, NOSUPERUSER, NOBYPASSRLS: the role tenant transactions of a pool
# without its own tenant role run as (superuser pools: tests, tools). Member
# of every service's trading_<svc>_tenant; granted to no login role.
TENANT_ROLE = "trading_tenant"
# The custom setting RLS policies read.
TENANT_SETTING = "app.tenant_id"
# Session setting naming the pool's tenant role (create_pool(tenant_role=...)).
TENANT_ROLE_SETTING = "app.tenant_role"
# SQL for "the tenant role of this connection": its pool's, else TENANT_ROLE.
TENANT_ROLE_SQL = f"coalesce(nullif(current_setting('{TENANT_ROLE_SETTING}', true), ''), '{TENANT_ROLE}')"

T = TypeVar("T")


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: json/jsonb as Python objects instead of strings."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
        )


async def create_pool(
    settings: PostgresSettings,
    *,
    dsn: str | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    application_name: str = "trading",
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    password: str | Callable[[], str] | None = None,
    tenant_role: str | None = None,
    metrics: StoreClientMetrics | None = None,
) -> asyncpg.Pool:
    """An asyncpg pool for `settings.dsn` (or `dsn`), ready to use.

    Sessions run in UTC with JIT off (JIT compiles slow plans for short OLTP
    queries and hurts tail latency); idle connections are recycled after 5 min
    so a restarted server or a failover is picked up. `init` runs on each new
    connection after the built-in setup. `password` may be a callable, asked
    on every new connection (a rotated secret is picked up without a
    restart). `tenant_role` is the role :func:`tenant_transaction` switches
    to on this pool (default :data:`TENANT_ROLE`).

    Every statement on the pool's connections is timed by asyncpg's query
    logger into ``trading_postgres_client_seconds`` (runtime.storage.metrics;
    ``service`` = `application_name`); `metrics` replaces the default registry's.
    """
    observer = (metrics or default_store_metrics()).observer(POSTGRES, application_name)

    def log_query(record: Any) -> None:
        # An asyncpg LoggedQuery, handed over by loop.call_soon once the statement ended.
        observer.observe(statement_kind(record.query), record.exception is None, record.elapsed)

    async def setup(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if init is not None:
            await init(conn)
        conn.add_query_logger(log_query)

    async def keep_session(_conn: asyncpg.Connection) -> None:
        # asyncpg's default reset sends "advisory unlock all; CLOSE ALL;
        # UNLISTEN *; RESET ALL" on every release: one more round trip per
        # query or transaction. This project changes session state only inside
        # transactions (set_config(..., true), SET LOCAL ROLE, xact advisory
        # locks; the migration lock is released in a finally), so there is
        # nothing to reset. asyncpg still rolls back a transaction left open.
        return None

    server_settings = {"application_name": application_name, "timezone": "UTC", "jit": "off"}
    if tenant_role is not None:
        server_settings[TENANT_ROLE_SETTING] = tenant_role
    pool = await asyncpg.create_pool(
        dsn or settings.dsn,
        password=password,
        min_size=settings.pool_min_size if min_size is None else min_size,
        max_size=settings.pool_max_size if max_size is None else max_size,
        command_timeout=settings.command_timeout_s,
        timeout=settings.command_timeout_s,
        max_inactive_connection_lifetime=300.0,
        # No liveness query on acquire needed for a PostgreSQL restart: asyncpg
        # marks a connection the server closed as closed and the pool opens a
        # new one on the next acquire (tested in test_gateway_postgres_outage:
        # no failed call after the restart); one broken mid-query raises
        # ConnectionDoesNotExistError (answered UNAVAILABLE) and is replaced.
        server_settings=server_settings,
        init=setup,
        reset=keep_session,
    )
    assert pool is not None  # create_pool only returns None when awaited lazily
    return pool


def _check_tenant(tenant_id: str) -> None:
    if not tenant_id:
        # An empty tenant would match rows whose tenant_id is '' and hide bugs upstream.
        raise ValueError("tenant_id must not be empty")


@asynccontextmanager
async def tenant_transaction(
    pool: asyncpg.Pool, tenant_id: str, *, role: str | None = TENANT_ROLE
) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction scoped to `tenant_id`.

    ``app.tenant_id`` is set with ``set_config(..., true)`` (the ``SET LOCAL``
    form), so it ends with the transaction and never leaks to the next user of
    the pooled connection. `role` (default :data:`TENANT_ROLE`) is assumed
    the same way (``set_config('role', ...)`` is ``SET LOCAL ROLE``) so RLS
    applies even to a superuser login; the default :data:`TENANT_ROLE` means
    the pool's own tenant role (``trading_<svc>_tenant`` for a service's
    pool, see :func:`create_pool`). Pass ``None`` to stay the login role.

    Both settings travel in one statement (this runs on every tenant-scoped
    call). The transaction is asyncpg's own, so callers may nest
    `conn.transaction()` (savepoints) inside.
    """
    _check_tenant(tenant_id)
    async with pool.acquire() as conn, conn.transaction():
        if role is None:
            await conn.execute("SELECT set_config($1, $2, true)", TENANT_SETTING, tenant_id)
        elif role == TENANT_ROLE:
            await conn.execute(
                f"SELECT set_config($1, $2, true), set_config('role', {TENANT_ROLE_SQL}, true)",
                TENANT_SETTING,
                tenant_id,
            )
        else:
            await conn.execute(
                "SELECT set_config($1, $2, true), set_config('role', $3, true)",
                TENANT_SETTING,
                tenant_id,
                role,
            )
        yield conn


async def run_in_tenant(
    pool: asyncpg.Pool,
    tenant_id: str,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    role: str | None = TENANT_ROLE,
) -> T:
    """Run ``fn(conn, *args)`` in a transaction scoped to `tenant_id` (see :func:`tenant_transaction`)."""
    async with tenant_transaction(pool, tenant_id, role=role) as conn:
        return await fn(conn, *args)


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (schema, table, role) for interpolation."""
    return '"' + name.replace('"', '""') + '"'


def tenant_rls_sql(table: str, column: str = "tenant_id") -> str:
    """SQL that turns on (and forces) row-level security by tenant for `table`.

    `table` may be schema-qualified (``execution.orders``); meant for migrations.
    """
    qualified = ".".join(quote_ident(p) for p in table.split("."))
    col = quote_ident(column)
    check = f"{col} = current_setting('{TENANT_SETTING}')"
    return (
        f"ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY;\n"
        f"ALTER TABLE {qualified} FORCE ROW LEVEL SECURITY;\n"
        f"CREATE POLICY tenant_isolation ON {qualified} USING ({check}) WITH CHECK ({check});\n"
    )


async def ensure_tenant_role(conn: asyncpg.Connection, role: str = TENANT_ROLE) -> None:
    """Create the unprivileged tenant role if missing and let the current user assume it.

    Roles are cluster-wide, so concurrent creators (other databases, other
    services) can race; a duplicate is fine.
    """
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    if not exists:
        try:
            # A savepoint, so losing the race does not abort the caller's transaction.
            async with conn.transaction():
                await conn.execute(f"CREATE ROLE {quote_ident(role)} NOLOGIN NOSUPERUSER NOBYPASSRLS")
        except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            pass
    is_super = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if not is_super:
        member = await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", role)
        if not member:
            await conn.execute(f"GRANT {quote_ident(role)} TO CURRENT_USER")


# Errors that say "the database is briefly unavailable or busy", not "this
# write is bad": consumers retry them for a while instead of dead-lettering.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    OSError,
    TimeoutError,
)


async def retry_transient(call: Callable[[], Awaitable[T]], *, within_s: float, what: str) -> T:
    """`call()`, retried with jittered exponential backoff while it fails with
    one of :data:`TRANSIENT_ERRORS`, for up to `within_s` seconds; any other
    error, or the last transient one, is raised."""

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s failed (attempt %d), retrying: %r", what, state.attempt_number, error)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
        stop=stop_after_delay(within_s),
        before_sleep=log_retry,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises")
