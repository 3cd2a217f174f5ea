"""PostgreSQL roles per service: who owns the tables, who logs in, who acts for a tenant.

Every service that keeps data in PostgreSQL owns one schema named after it
and three roles, generated from :data:`POSTGRES_GRANTS` (the one table):

``trading_<svc>_owner`` (NOLOGIN)
    Owns the schema and every object in it. Migrations run as this role
    (``SET LOCAL ROLE``, from the migrator's connection), so the application
    role is never the owner: it cannot ALTER, DROP or TRUNCATE its tables,
    change their policies or disable their triggers.
``trading_<svc>_app`` (LOGIN, password ``get_secret(settings, "postgres", svc)``)
    The service's connection. USAGE on its own schema and the table
    privileges of the table below, nothing on any other schema. NOSUPERUSER,
    NOBYPASSRLS: row-level security applies to it; where a service does
    cross-tenant platform work (identity's relay and key ring, execution's
    matcher and outbox relay) its migrations give this role an explicit
    ``service_role`` policy on those tables.
``trading_<svc>_tenant`` (NOLOGIN, NOBYPASSRLS)
    What tenant transactions run as (``SET LOCAL ROLE``, see
    :func:`runtime.storage.postgres.tenant_transaction`): the same table
    privileges, no platform policy, so only the ``tenant_isolation`` policies
    let rows through. Granted to ``trading_<svc>_app`` only.

The historical ``trading_tenant`` role stays as the umbrella tenant role of
superuser connections (tests, operators): it is a member of every
``trading_<svc>_tenant`` and granted to no login role.

Who runs this: the migrator connection (``settings.postgres.dsn``; the local
``postgres`` superuser here, in production a provisioning job holding a role
with CREATEROLE that is a member of the owner roles) at service start-up
(``postgres.migrate_on_start``) or ahead of a deploy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from runtime.security.principals import check_principal
from runtime.storage.postgres import TENANT_ROLE, quote_ident

log = logging.getLogger(__name__)

# Privileges the application and tenant roles get on a table unless the table says otherwise.
DEFAULT_TABLE_PRIVILEGES: tuple[str, ...] = ("SELECT", "INSERT", "UPDATE", "DELETE")
_ALLOWED_PRIVILEGES = frozenset(DEFAULT_TABLE_PRIVILEGES)

T = TypeVar("T")


@dataclass(frozen=True)
class DatabaseGrant:
    """What one service's roles may do in its own schema."""

    service: str
    # Table -> privileges of the app and tenant roles, where not DEFAULT_TABLE_PRIVILEGES.
    # TRUNCATE, REFERENCES and TRIGGER are never granted.
    tables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def privileges(self, table: str) -> tuple[str, ...]:
        return self.tables.get(table, DEFAULT_TABLE_PRIVILEGES)


def _grants(*grants: DatabaseGrant) -> dict[str, DatabaseGrant]:
    table: dict[str, DatabaseGrant] = {}
    for g in grants:
        check_principal(g.service)
        for name, privileges in g.tables.items():
            bad = set(privileges) - _ALLOWED_PRIVILEGES
            if bad:
                raise ValueError(f"{g.service}.{name}: privileges {sorted(bad)} are never granted")
        table[g.service] = g
    return table


# The one table: every service with a PostgreSQL schema. A unit test checks it
# against the services whose ServiceSpec needs "postgres".
POSTGRES_GRANTS: dict[str, DatabaseGrant] = _grants(
    DatabaseGrant("identity"),
    DatabaseGrant("marketdata"),
    DatabaseGrant("decision"),
    DatabaseGrant("execution"),
    DatabaseGrant("portfolio"),
    DatabaseGrant("notification"),
    # Append-only: no UPDATE or DELETE for anyone but the owner (and its triggers refuse those too).
    # The lineage graph only grows: nodes are upserted (UPDATE), nothing is deleted.
    DatabaseGrant(
        "audit",
        {
            "events": ("SELECT", "INSERT"),
            "graph_nodes": ("SELECT", "INSERT", "UPDATE"),
            "graph_edges": ("SELECT", "INSERT"),
        },
    ),
)


def owner_role(service: str) -> str:
    return f"trading_{service}_owner"


def app_role(service: str) -> str:
    return f"trading_{service}_app"


def tenant_role(service: str) -> str:
    return f"trading_{service}_tenant"


def scram_sha_256_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677).

    ``ALTER ROLE ... PASSWORD '<verifier>'`` sets the password without the
    plaintext ever reaching the server (its logs, pg_stat_statements), as
    psql's ``\\password`` does.
    """
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def verifier_matches(verifier: str | None, password: str) -> bool:
    """True when the stored SCRAM-SHA-256 `verifier` is that of `password`."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, keys = verifier[len("SCRAM-SHA-256$") :].split("$", 1)
        iterations, salt = head.split(":", 1)
        expected = scram_sha_256_verifier(password, iterations=int(iterations), salt=base64.b64decode(salt))
    except ValueError:
        return False
    return hmac.compare_digest(expected.rsplit("$", 1)[1], keys)


async def _retry_catalog_race(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, again when a concurrent session changed the same catalog row
    (roles are cluster-wide: test databases on one server provision the same roles)."""
    for attempt in range(10):
        try:
            return await call()
        except asyncpg.InternalServerError as exc:
            if "concurrently" not in str(exc) or attempt == 9:
                raise
        except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            if attempt == 9:
                raise
    raise AssertionError("unreachable")


async def _ensure_role(conn: asyncpg.Connection, role: str, attributes: str) -> None:
    async def create() -> None:
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            return
        async with conn.transaction():  # a savepoint when the caller has a transaction open
            await conn.execute(f"CREATE ROLE {quote_ident(role)} {attributes}")

    await _retry_catalog_race(create)


async def _ensure_member(conn: asyncpg.Connection, group: str, member: str) -> None:
    async def grant() -> None:
        if await conn.fetchval(
            "SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = $1 AND u.rolname = $2",
            group,
            member,
        ):
            return
        async with conn.transaction():
            await conn.execute(f"GRANT {quote_ident(group)} TO {quote_ident(member)}")

    await _retry_catalog_race(grant)


async def _is_superuser(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))


async def ensure_service_roles(conn: asyncpg.Connection, service: str) -> None:
    """Create the owner, app and tenant roles of `service` if missing, with their memberships.

    Idempotent; needs CREATEROLE (or superuser). The app role is created
    without a password (:func:`set_app_password` sets it).
    """
    grant = POSTGRES_GRANTS[service]
    owner, app, tenant = owner_role(grant.service), app_role(grant.service), tenant_role(grant.service)
    await _ensure_role(conn, owner, "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS")
    await _ensure_role(conn, tenant, "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS")
    await _ensure_role(conn, app, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT")
    await _ensure_role(conn, TENANT_ROLE, "NOLOGIN NOSUPERUSER NOBYPASSRLS")
    # The app switches to its tenant role per transaction (NOINHERIT: it holds
    # none of the tenant role's rights outside SET ROLE; it has its own grants).
    await _ensure_member(conn, tenant, app)
    # The superuser umbrella (tests, operators) reaches every service's tenant view.
    await _ensure_member(conn, tenant, TENANT_ROLE)
    if not await _is_superuser(conn):
        # A non-superuser migrator must be a member of the owner role to SET ROLE to it.
        await _ensure_member(conn, owner, await conn.fetchval("SELECT current_user"))


async def set_app_password(conn: asyncpg.Connection, service: str, password: str) -> bool:
    """Give ``trading_<svc>_app`` `password` (as a SCRAM verifier); False when it had it already.

    The stored verifier is compared first where the connection may read it
    (superuser), so restarts do not rewrite the catalog.
    """
    role = app_role(service)
    if await _is_superuser(conn):
        current = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
        if verifier_matches(current, password):
            return False
    verifier = scram_sha_256_verifier(password)

    async def alter() -> None:
        # A verifier is [A-Za-z0-9+/=:$-]: safe inside a literal; no plaintext is sent.
        await conn.execute(f"ALTER ROLE {quote_ident(role)} WITH LOGIN PASSWORD '{verifier}'")

    await _retry_catalog_race(alter)
    return True


async def adopt_schema(conn: asyncpg.Connection, service: str) -> None:
    """Make ``trading_<svc>_owner`` the owner of the schema and everything in it.

    New databases get that from the migrations themselves (they run as the
    owner); this converges databases migrated before the roles existed
    (objects owned by the migrator). Needs superuser; skipped otherwise.
    """
    if not await _is_superuser(conn):
        return
    owner = quote_ident(owner_role(service))
    schema = service
    if await conn.fetchval(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", schema
    ) not in (
        None,
        owner_role(service),
    ):
        await conn.execute(f"ALTER SCHEMA {quote_ident(schema)} OWNER TO {owner}")
    rows = await conn.fetch(
        """SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND c.relowner <> $2::regrole
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                             AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))""",
        schema,
        owner_role(service),
    )
    for r in rows:
        what = {"S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}.get(
            r["relkind"], "TABLE"
        )
        name = f"{quote_ident(schema)}.{quote_ident(r['relname'])}"
        await conn.execute(f"ALTER {what} {name} OWNER TO {owner}")
    functions = await conn.fetch(
        """SELECT p.oid::regprocedure::text AS sig
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = $1 AND p.proowner <> $2::regrole""",
        schema,
        owner_role(service),
    )
    for f in functions:
        await conn.execute(f"ALTER ROUTINE {f['sig']} OWNER TO {owner}")


async def apply_grants(conn: asyncpg.Connection, service: str) -> None:
    """Converge the app and tenant roles' rights on `service`'s schema to the table.

    Revokes everything first (also the rights the pre-role runner granted
    ``trading_tenant`` directly), then grants USAGE on the schema, the table
    privileges, USAGE/SELECT on sequences and EXECUTE on functions; in one
    transaction, so running replicas never see a schema without rights.
    """
    grant = POSTGRES_GRANTS[service]
    schema = quote_ident(service)
    roles = ", ".join(quote_ident(r) for r in (app_role(service), tenant_role(service)))
    tables = await conn.fetch(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY c.relname""",
        service,
    )
    unknown = set(grant.tables) - {r["relname"] for r in tables}
    if unknown:
        raise ValueError(f"POSTGRES_GRANTS[{service!r}] names tables the schema lacks: {sorted(unknown)}")
    everyone = f"{roles}, {quote_ident(TENANT_ROLE)}, PUBLIC"
    async with conn.transaction():
        await conn.execute(
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {everyone};"
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {everyone};"
            f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;"
            f"GRANT USAGE ON SCHEMA {schema} TO {roles};"
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {roles};"
            f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {roles};"
        )
        for r in tables:
            privileges = ", ".join(grant.privileges(r["relname"]))
            await conn.execute(f"GRANT {privileges} ON {schema}.{quote_ident(r['relname'])} TO {roles}")
