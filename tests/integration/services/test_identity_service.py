"""identity over gRPC on real PostgreSQL, Redis and Kafka (tansu): login,
tokens verified against GetJwks, refresh rotation and reuse detection,
logout, API keys end to end (gateway-side verifier included), signing key
rotation, scope enforcement, tenant isolation, events and password rehash.

Calls made "as" a user carry what the gateway derives from a verified
token: a context token (tenant, subject, scopes, roles) the gateway signed
for identity, over the gateway's mutual-TLS channel."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from trading.identity.v1 import events_pb2 as ev
from trading.identity.v1 import identity_service_pb2 as pb
from trading.identity.v1 import identity_service_pb2_grpc as pb_grpc

from runtime.config import Settings
from runtime.errors import error_details
from runtime.messaging import decode_envelope
from services.identity.adapters.postgres import PostgresSigningKeyStore
from services.identity.apikeys import ApiKeyVerifier
from services.identity.keys import key_encryption_key
from services.identity.main import make_spec
from services.identity.seed import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG
from services.identity.settings import IdentitySettings
from services.identity.tokens import AccessClaims, JwksVerifier
from tests.support import gateway_stack
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

# The platform operator is seeded once per database (idempotently, never
# re-keyed): every test module must use the same credentials for it.
OPERATOR_EMAIL, OPERATOR_PASSWORD = gateway_stack.OPERATOR_EMAIL, gateway_stack.OPERATOR_PASSWORD
# Cheap argon2 so the suite stays fast on a loaded machine; a rehash test uses others.
FAST = IdentitySettings(
    argon2_time_cost=1,
    argon2_memory_kib=1024,
    argon2_parallelism=1,
    key_reload_s=0.2,
    login_max_failures=3,
    platform_admin_password=OPERATOR_PASSWORD,
)

if TYPE_CHECKING:
    # Only in the type stubs: what IdentityServiceStub(aio channel) returns.
    Stub = pb_grpc.IdentityServiceAsyncStub
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Identity:
    stub: Stub
    verifier: JwksVerifier

    async def login(self, slug: str, email: str, password: str) -> tuple[pb.LoginResponse, AccessClaims]:
        resp = await self.stub.Login(pb.LoginRequest(tenant_slug=slug, email=email, password=password))
        return resp, await self.verifier.verify(resp.tokens.access_token)


def as_caller(claims: AccessClaims, idempotency_key: str = "") -> Metadata:
    """The metadata the gateway sets for a verified token."""
    md = user_md(
        "identity", claims.tenant_id, subject=claims.subject, scopes=claims.scopes, roles=claims.roles
    )
    return md + ((("idempotency-key", idempotency_key),) if idempotency_key else ())


def jwks_fetcher(stub: Stub) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def fetch() -> dict[str, Any]:
        resp = await stub.GetJwks(pb.GetJwksRequest())
        fields = ("kty", "crv", "x", "y", "kid", "alg", "use")
        return {"keys": [{f: getattr(k, f) for f in fields} for k in resp.keys]}

    return fetch


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    info = error_details(err.value).error_info
    return err.value.code(), info.reason if info is not None else ""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def identity(infra_settings: Settings) -> AsyncIterator[Identity]:
    async with (
        running_service(make_spec(FAST), infra_settings) as address,
        service_channel(address, "identity") as channel,
    ):
        stub = pb_grpc.IdentityServiceStub(channel)
        yield Identity(stub, JwksVerifier(jwks_fetcher(stub), issuer=FAST.issuer, audience=FAST.audience))


async def new_tenant(
    identity: Identity, operator: AccessClaims
) -> tuple[pb.CreateTenantResponse, AccessClaims]:
    slug = f"t-{uuid.uuid4().hex[:10]}"
    email = f"admin@{slug}.test"
    created = await identity.stub.CreateTenant(
        pb.CreateTenantRequest(
            slug=slug, display_name=slug, admin_email=email, admin_password="admin-password-1"
        ),
        metadata=as_caller(operator),
    )
    _, admin = await identity.login(slug, email, "admin-password-1")
    return created, admin


async def new_user(
    identity: Identity, admin: AccessClaims, slug: str, roles: list[pb.Role.ValueType]
) -> tuple[pb.User, AccessClaims]:
    email = f"u-{uuid.uuid4().hex[:8]}@x.test"
    user = (
        await identity.stub.CreateUser(
            pb.CreateUserRequest(email=email, display_name="U", password="user-password-1", roles=roles),
            metadata=as_caller(admin),
        )
    ).user
    _, claims = await identity.login(slug, email, "user-password-1")
    return user, claims


async def test_demo_login_issues_tokens_that_verify_against_jwks(identity: Identity) -> None:
    resp, claims = await identity.login(DEMO_SLUG, "Trader@Demo.local", DEMO_PASSWORD)
    assert resp.roles == [pb.ROLE_TRADER] and resp.tokens.token_type == "Bearer"
    assert (claims.subject, claims.tenant_id) == (resp.user_id, resp.tenant_id)
    assert (
        claims.roles == {"TRADER"} and {"orders:write", "identity:write", "marketdata:read"} <= claims.scopes
    )
    assert "admin" not in claims.scopes and set(resp.tokens.scopes) == claims.scopes
    assert claims.expires_at - claims.issued_at == FAST.access_token_ttl_s
    assert resp.tokens.access_token_expires_at.seconds == int(claims.expires_at)
    jwks = await identity.stub.GetJwks(pb.GetJwksRequest())
    current = jwks.keys[0]
    assert (current.kid, current.kty, current.crv, current.alg, current.use) == (
        claims.key_id, "EC", "P-256", "ES256", "sig"
    )  # fmt: skip


async def test_wrong_password_unknown_user_and_tenant_fail_alike_then_rate_limited(
    identity: Identity,
) -> None:
    email = f"nobody-{uuid.uuid4().hex[:8]}@demo.local"
    results = [
        await failure(
            identity.stub.Login(pb.LoginRequest(tenant_slug=DEMO_SLUG, email=DEMO_EMAIL, password="nope"))
        ),
        await failure(identity.stub.Login(pb.LoginRequest(tenant_slug=DEMO_SLUG, email=email, password="x"))),
        await failure(
            identity.stub.Login(pb.LoginRequest(tenant_slug="no-such-tenant", email=email, password="x"))
        ),
    ]
    assert results == [(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")] * 3
    # The same e-mail failing repeatedly is throttled, with a retry hint.
    for _ in range(FAST.login_max_failures - 1):
        await failure(identity.stub.Login(pb.LoginRequest(tenant_slug=DEMO_SLUG, email=email, password="x")))
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await identity.stub.Login(pb.LoginRequest(tenant_slug=DEMO_SLUG, email=email, password="x"))
    details = error_details(limited.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED and (details.retry_delay_s or 0) > 0


async def test_refresh_rotates_and_reuse_revokes_the_session(identity: Identity) -> None:
    first, _ = await identity.login(DEMO_SLUG, DEMO_EMAIL, DEMO_PASSWORD)
    r1 = first.tokens.refresh_token
    r2 = (await identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=r1))).tokens
    assert r2.refresh_token != r1 and r2.refresh_token_expires_at == first.tokens.refresh_token_expires_at
    claims = await identity.verifier.verify(r2.access_token)
    assert claims.subject == first.user_id
    r3 = (await identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=r2.refresh_token))).tokens
    # r1 was rotated: presenting it again is theft; the whole family dies.
    assert await failure(identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=r1))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )
    assert await failure(
        identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=r3.refresh_token))
    ) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_REFRESH_TOKEN",
    )
    forged = "rt_" + "A" * 64
    assert (await failure(identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=forged))))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )


async def test_logout_revokes_one_or_all_sessions(identity: Identity) -> None:
    a, _ = await identity.login(DEMO_SLUG, DEMO_EMAIL, DEMO_PASSWORD)
    out = await identity.stub.Logout(pb.LogoutRequest(refresh_token=a.tokens.refresh_token))
    assert out.revoked_count == 1
    assert (
        await failure(
            identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=a.tokens.refresh_token))
        )
    )[0] == grpc.StatusCode.UNAUTHENTICATED
    again = await identity.stub.Logout(pb.LogoutRequest(refresh_token=a.tokens.refresh_token))
    assert again.revoked_count == 0

    sessions = [await identity.login(DEMO_SLUG, DEMO_EMAIL, DEMO_PASSWORD) for _ in range(2)]
    everything = await identity.stub.Logout(
        pb.LogoutRequest(refresh_token=sessions[0][0].tokens.refresh_token, all_sessions=True)
    )
    assert everything.revoked_count >= 2
    for resp, _ in sessions:
        with pytest.raises(grpc.aio.AioRpcError):
            await identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=resp.tokens.refresh_token))


async def test_api_keys_created_verified_listed_revoked(identity: Identity, redis_client: Redis) -> None:
    _, trader = await identity.login(DEMO_SLUG, DEMO_EMAIL, DEMO_PASSWORD)
    md = as_caller(trader)
    name = f"bot-{uuid.uuid4().hex[:6]}"
    created = await identity.stub.CreateApiKey(
        pb.CreateApiKeyRequest(name=name, scopes=["marketdata:read", "orders:write"]), metadata=md
    )
    secret, key = created.secret, created.api_key
    assert secret.startswith(key.key_prefix) and key.owner_user_id == trader.subject

    verifier = ApiKeyVerifier(redis_client)
    principal = await verifier.verify(secret)
    assert principal is not None and principal.api_key_id == key.api_key_id
    assert (principal.tenant_id, principal.subject) == (trader.tenant_id, trader.subject)
    assert principal.scopes == {"marketdata:read", "orders:write"}
    assert await verifier.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None

    listed = await identity.stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=md)
    mine = next(k for k in listed.api_keys if k.api_key_id == key.api_key_id)
    assert mine.key_prefix == key.key_prefix and mine.HasField("last_used_at")
    assert secret not in str(listed)

    assert await failure(
        identity.stub.CreateApiKey(pb.CreateApiKeyRequest(name=name, scopes=["marketdata:read"]), metadata=md)
    ) == (grpc.StatusCode.ALREADY_EXISTS, "API_KEY_NAME_TAKEN")
    assert await failure(
        identity.stub.CreateApiKey(pb.CreateApiKeyRequest(name="too-much", scopes=["admin"]), metadata=md)
    ) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPES_NOT_HELD")

    revoked = await identity.stub.RevokeApiKey(pb.RevokeApiKeyRequest(api_key_id=key.api_key_id), metadata=md)
    assert revoked.api_key.HasField("revoked_at")
    assert await verifier.verify(secret) is None
    again = await identity.stub.RevokeApiKey(pb.RevokeApiKeyRequest(api_key_id=key.api_key_id), metadata=md)
    assert again.api_key.revoked_at == revoked.api_key.revoked_at
    active = await identity.stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=md)
    assert key.api_key_id not in {k.api_key_id for k in active.api_keys}


async def test_signing_key_rotation_keeps_old_tokens_valid(
    identity: Identity, pg_pool: asyncpg.Pool, infra_settings: Settings
) -> None:
    _, old = await identity.login(DEMO_SLUG, DEMO_EMAIL, DEMO_PASSWORD)
    old_token = (
        await identity.stub.Login(
            pb.LoginRequest(tenant_slug=DEMO_SLUG, email=DEMO_EMAIL, password=DEMO_PASSWORD)
        )
    ).tokens.access_token
    # What `python -m services.identity.keys rotate` does, on the same database.
    store = PostgresSigningKeyStore(pg_pool, key_encryption_key(infra_settings, FAST.key_encryption_key))
    new_kid = await store.rotate(retire_grace_s=FAST.access_token_ttl_s + 60)
    assert new_kid != old.key_id
    deadline = time.monotonic() + 15
    while True:
        jwks = await identity.stub.GetJwks(pb.GetJwksRequest())
        if jwks.keys[0].kid == new_kid:
            break
        assert time.monotonic() < deadline, "rotation not picked up"
        await asyncio.sleep(0.1)
    assert {k.kid for k in jwks.keys} >= {new_kid, old.key_id}

    # A verifier that cached the old JWKS still accepts the old token and
    # learns the new kid on first sight (one refetch).
    resp, fresh = await identity.login(DEMO_SLUG, DEMO_EMAIL, DEMO_PASSWORD)
    assert fresh.key_id == new_kid
    assert (await identity.verifier.verify(old_token)).key_id == old.key_id
    verifier = JwksVerifier(jwks_fetcher(identity.stub), issuer=FAST.issuer, audience=FAST.audience)
    assert (await verifier.verify(old_token)).key_id == old.key_id
    assert (await verifier.verify(resp.tokens.access_token)).key_id == new_kid


async def test_admin_rpcs_need_the_admin_scope(identity: Identity) -> None:
    _, trader = await identity.login(DEMO_SLUG, DEMO_EMAIL, DEMO_PASSWORD)
    md = as_caller(trader)
    calls: list[Awaitable[Any]] = [
        identity.stub.ListUsers(pb.ListUsersRequest(), metadata=md),
        identity.stub.GetUser(pb.GetUserRequest(user_id=trader.subject), metadata=md),
        identity.stub.CreateUser(
            pb.CreateUserRequest(
                email="x@y.test", display_name="x", password="xxxxxxxxxxxx", roles=[pb.ROLE_ADMIN]
            ),
            metadata=md,
        ),
        identity.stub.UpdateUserRoles(
            pb.UpdateUserRolesRequest(user_id=trader.subject, roles=[pb.ROLE_ADMIN]), metadata=md
        ),
        identity.stub.ListTenants(pb.ListTenantsRequest(), metadata=md),
        identity.stub.GetTenant(pb.GetTenantRequest(tenant_id=trader.tenant_id), metadata=md),
    ]
    for call in calls:
        assert await failure(call) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    # No caller context at all (no context token): unauthenticated.
    assert (await failure(identity.stub.ListApiKeys(pb.ListApiKeysRequest())))[
        0
    ] == grpc.StatusCode.UNAUTHENTICATED


async def test_tenant_isolation_between_administrators(identity: Identity, redis_client: Redis) -> None:
    _, operator = await identity.login("platform", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    tenant_a, admin_a = await new_tenant(identity, operator)
    tenant_b, admin_b = await new_tenant(identity, operator)
    user_b, trader_b = await new_user(identity, admin_b, tenant_b.tenant.slug, [pb.ROLE_TRADER])
    key_b = await identity.stub.CreateApiKey(
        pb.CreateApiKeyRequest(name="b-bot", scopes=["orders:write"]), metadata=as_caller(trader_b)
    )
    # RevokeApiKey needs identity:write, which ADMIN alone does not grant
    # (contract): admin A also takes TRADER and logs in again.
    both = pb.UpdateUserRolesRequest(user_id=admin_a.subject, roles=[pb.ROLE_ADMIN, pb.ROLE_TRADER])
    await identity.stub.UpdateUserRoles(both, metadata=as_caller(admin_a))
    _, admin_a = await identity.login(tenant_a.tenant.slug, tenant_a.admin_user.email, "admin-password-1")
    assert {"admin", "identity:write"} <= admin_a.scopes
    md_a = as_caller(admin_a)

    users_a = await identity.stub.ListUsers(pb.ListUsersRequest(), metadata=md_a)
    assert [u.email for u in users_a.users] == [tenant_a.admin_user.email]
    not_found = grpc.StatusCode.NOT_FOUND
    assert (await failure(identity.stub.GetUser(pb.GetUserRequest(user_id=user_b.user_id), metadata=md_a)))[
        0
    ] == not_found
    roles_b = pb.UpdateUserRolesRequest(user_id=user_b.user_id, roles=[pb.ROLE_ADMIN])
    assert (await failure(identity.stub.UpdateUserRoles(roles_b, metadata=md_a)))[0] == not_found
    revoke_b = pb.RevokeApiKeyRequest(api_key_id=key_b.api_key.api_key_id)
    assert (await failure(identity.stub.RevokeApiKey(revoke_b, metadata=md_a)))[0] == not_found
    assert await ApiKeyVerifier(redis_client).verify(key_b.secret) is not None
    keys_a = await identity.stub.ListApiKeys(pb.ListApiKeysRequest(include_revoked=True), metadata=md_a)
    assert key_b.api_key.api_key_id not in {k.api_key_id for k in keys_a.api_keys}
    get_b = pb.GetTenantRequest(tenant_id=tenant_b.tenant.tenant_id)
    assert (await failure(identity.stub.GetTenant(get_b, metadata=md_a)))[0] == not_found
    tenants_a = await identity.stub.ListTenants(pb.ListTenantsRequest(), metadata=md_a)
    assert [t.tenant_id for t in tenants_a.tenants] == [tenant_a.tenant.tenant_id]
    # Only platform operators create tenants; they see every tenant.
    create = pb.CreateTenantRequest(
        slug="nope", display_name="n", admin_email="a@n.test", admin_password="p" * 12
    )
    assert await failure(identity.stub.CreateTenant(create, metadata=md_a)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PLATFORM_OPERATOR_REQUIRED",
    )
    seen: set[str] = set()
    token = ""
    while True:
        page = await identity.stub.ListTenants(
            pb.ListTenantsRequest(page_size=2, page_token=token), metadata=as_caller(operator)
        )
        seen |= {t.tenant_id for t in page.tenants}
        if not (token := page.next_page_token):
            break
    assert {tenant_a.tenant.tenant_id, tenant_b.tenant.tenant_id} <= seen

    # The last admin cannot demote themselves; roles narrow API keys at once.
    demote = pb.UpdateUserRolesRequest(user_id=admin_a.subject, roles=[pb.ROLE_TRADER])
    assert await failure(identity.stub.UpdateUserRoles(demote, metadata=md_a)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_ADMIN",
    )
    viewer = pb.UpdateUserRolesRequest(user_id=user_b.user_id, roles=[pb.ROLE_VIEWER])
    changed = await identity.stub.UpdateUserRoles(viewer, metadata=as_caller(admin_b))
    assert list(changed.user.roles) == [pb.ROLE_VIEWER]
    narrowed = await ApiKeyVerifier(redis_client).verify(key_b.secret)
    assert narrowed is not None and narrowed.scopes == frozenset()


async def test_create_user_is_idempotent_by_key(identity: Identity) -> None:
    _, operator = await identity.login("platform", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    _, admin = await new_tenant(identity, operator)
    key = uuid.uuid4().hex
    request = pb.CreateUserRequest(
        email="same@x.test", display_name="Same", password="user-password-1", roles=[pb.ROLE_VIEWER]
    )
    first = await identity.stub.CreateUser(request, metadata=as_caller(admin, key))
    second = await identity.stub.CreateUser(request, metadata=as_caller(admin, key))
    assert first == second
    other = pb.CreateUserRequest(
        email="other@x.test", display_name="O", password="p" * 12, roles=[pb.ROLE_VIEWER]
    )
    assert await failure(identity.stub.CreateUser(other, metadata=as_caller(admin, key))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert await failure(identity.stub.CreateUser(request, metadata=as_caller(admin))) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "USER_EMAIL_TAKEN",
    )


async def test_events_are_published_without_secrets(identity: Identity, infra_settings: Settings) -> None:
    _, operator = await identity.login("platform", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    tenant, admin = await new_tenant(identity, operator)
    user, trader = await new_user(identity, admin, tenant.tenant.slug, [pb.ROLE_TRADER])
    key = await identity.stub.CreateApiKey(
        pb.CreateApiKeyRequest(name="ev", scopes=["orders:write"]), metadata=as_caller(trader)
    )
    await identity.stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(api_key_id=key.api_key.api_key_id), metadata=as_caller(trader)
    )
    await identity.stub.UpdateUserRoles(
        pb.UpdateUserRolesRequest(user_id=user.user_id, roles=[pb.ROLE_VIEWER, pb.ROLE_TRADER]),
        metadata=as_caller(admin),
    )
    wanted = {
        ev.TenantCreated.DESCRIPTOR.full_name,
        ev.UserCreated.DESCRIPTOR.full_name,
        ev.ApiKeyCreated.DESCRIPTOR.full_name,
        ev.ApiKeyRevoked.DESCRIPTOR.full_name,
        ev.UserRolesChanged.DESCRIPTOR.full_name,
    }
    consumer = AIOKafkaConsumer(
        "trading.identity.events",
        bootstrap_servers=infra_settings.kafka.servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 20
        while not wanted <= set(seen) or seen.get(ev.UserCreated.DESCRIPTOR.full_name, 0) < 2:
            assert time.monotonic() < deadline, f"missing events: {wanted - set(seen)}"
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    assert record.value is not None
                    envelope = decode_envelope(record.value)
                    if envelope.tenant_id != tenant.tenant.tenant_id:
                        continue
                    assert key.secret.encode() not in record.value
                    assert b"$argon2" not in record.value and b"password" not in record.value
                    seen[envelope.event_type] = seen.get(envelope.event_type, 0) + 1
    finally:
        await consumer.stop()


async def test_login_rehashes_passwords_made_with_old_parameters(
    identity: Identity, infra_settings: Settings, pg_pool: asyncpg.Pool
) -> None:
    _, operator = await identity.login("platform", OPERATOR_EMAIL, OPERATOR_PASSWORD)
    tenant, admin = await new_tenant(identity, operator)
    user, _ = await new_user(identity, admin, tenant.tenant.slug, [pb.ROLE_VIEWER])

    async def stored() -> str:
        async with pg_pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT password_hash FROM identity.users WHERE user_id = $1", user.user_id
            )
        return str(value)

    assert "m=1024,t=1,p=1" in await stored()
    stronger = FAST.model_copy(update={"argon2_time_cost": 2, "argon2_memory_kib": 2048})
    async with (
        running_service(make_spec(stronger), infra_settings) as address,
        service_channel(address, "identity") as channel,
    ):
        await pb_grpc.IdentityServiceStub(channel).Login(
            pb.LoginRequest(tenant_slug=tenant.tenant.slug, email=user.email, password="user-password-1")
        )
    assert "m=2048,t=2,p=1" in await stored()
    # The old service still accepts the re-hashed password.
    await identity.login(tenant.tenant.slug, user.email, "user-password-1")
