"""IdentityService on the in-memory adapters: login and refresh token
rotation, users, API keys, tenants; tenant isolation, idempotency keys and
the right status for bad input. IssueDelegation signs with the service's
certificate: tests/integration/services/test_identity_service.py."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from trading.identity.v1 import events_pb2 as ev
from trading.identity.v1 import identity_service_pb2 as pb

from runtime.context import RequestContext
from runtime.errors import ServiceError
from runtime.security.pki import ensure_pki, local_paths
from runtime.security.tls import TlsIdentity
from runtime.security.tokens import ContextTokens
from services.identity.adapters.memory import (
    MemoryApiKeyCache,
    MemoryEventRelay,
    MemoryIdentityStore,
    MemoryLoginFailures,
    MemorySigningKeyStore,
)
from services.identity.api import Ctx, IdentityApi
from services.identity.domain import ADMIN, TRADER, PasswordPolicy, Passwords, RoleScopes, token_hash
from services.identity.keys import KeyRing
from services.identity.main import declared_scopes
from services.identity.seed import ensure_tenant, ensure_user
from services.identity.settings import IdentitySettings
from tests.support.servicers import as_caller, expect_error, servicer_context

DOMAIN = "trading.internal"
PASSWORD = "correct horse battery"
# The cheapest argon2id parameters: these tests are about the servicer, not the hash's cost.
FAST = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> ContextTokens:
    pki: Path = tmp_path_factory.mktemp("pki")
    ensure_pki(pki, DOMAIN)
    return ContextTokens(TlsIdentity("identity", local_paths(pki, "identity"), DOMAIN))


@pytest.fixture(scope="module")
def role_scopes() -> RoleScopes:
    return RoleScopes.from_declared(declared_scopes())


@dataclass
class Harness:
    api: IdentityApi
    store: MemoryIdentityStore
    failures: MemoryLoginFailures
    api_keys: MemoryApiKeyCache
    role_scopes: RoleScopes
    passwords: Passwords
    platform: str


@pytest.fixture
async def identity(signer: ContextTokens, role_scopes: RoleScopes) -> Harness:
    store, failures, api_keys = MemoryIdentityStore(), MemoryLoginFailures(), MemoryApiKeyCache()
    passwords = Passwords(FAST)
    settings = IdentitySettings(login_max_failures=3, seed_demo=False)
    ring = KeyRing(MemorySigningKeyStore(), access_ttl_s=300, rotate_after_s=86400)
    platform = await ensure_tenant(store, "platform", "Platform operators", is_platform=True)
    api = IdentityApi(
        store, failures, api_keys, ring, MemoryEventRelay(), passwords, role_scopes, settings,
        platform_tenant_id=platform, delegation_signer=signer,
    )  # fmt: skip
    return Harness(api, store, failures, api_keys, role_scopes, passwords, platform)


def context() -> Ctx:
    """A fresh recorded call context, typed as the servicer's."""
    return servicer_context()


@dataclass
class Member:
    tenant_id: str
    user_id: str
    email: str
    scopes: frozenset[str]


async def member(h: Harness, slug: str, email: str, *roles: str) -> Member:
    tenant = await ensure_tenant(h.store, slug, slug.title())
    await ensure_user(h.store, h.passwords, tenant, email, PASSWORD, roles)
    async with h.store.tenant(tenant) as tx:
        user = await tx.get_user_by_email(email)
    assert user is not None
    return Member(tenant, user.user_id, email, h.role_scopes.of_roles(roles))


@dataclass
class Caller:
    member: Member

    def __call__(self, idempotency_key: str = "") -> AbstractContextManager[RequestContext]:
        return as_caller(
            self.member.tenant_id,
            subject=self.member.user_id,
            scopes=sorted(self.member.scopes),
            idempotency_key=idempotency_key,
        )


def reason(error: object) -> str:
    """The ErrorInfo reason of a refused call."""
    assert isinstance(error, ServiceError)
    for detail in error.status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def login(slug: str, email: str, password: str = PASSWORD) -> pb.LoginRequest:
    return pb.LoginRequest(tenant_slug=slug, email=email, password=password)


async def test_login_issues_tokens_with_the_roles_scopes(identity: Harness) -> None:
    h = identity
    alice = await member(h, "acme", "alice@acme.test", TRADER)
    with as_caller("", caller="gateway"):
        reply = await h.api.Login(
            login("acme", "Alice@Acme.test"), context()
        )  # e-mails match case-insensitively
    assert (reply.tenant_id, reply.user_id) == (alice.tenant_id, alice.user_id)
    assert set(reply.tokens.scopes) == alice.scopes
    assert reply.tokens.access_token.count(".") == 2 and reply.tokens.refresh_token.startswith("rt_")
    with as_caller("", caller="gateway"):
        jwks = await h.api.GetJwks(pb.GetJwksRequest(), context())
    assert [k.alg for k in jwks.keys] == ["ES256"]


async def test_bad_credentials_are_unauthenticated_then_rate_limited(identity: Harness) -> None:
    h = identity
    await member(h, "acme", "alice@acme.test", TRADER)
    with as_caller("", caller="gateway"):
        for request in (
            login("acme", "alice@acme.test", "wrong"),
            login("acme", "nobody@acme.test"),
            login("no-such-tenant", "alice@acme.test"),
        ):
            await expect_error(h.api.Login(request, context()), grpc.StatusCode.UNAUTHENTICATED)
        for _ in range(2):  # the first address reaches the limit of 3
            await expect_error(
                h.api.Login(login("acme", "alice@acme.test", "wrong"), context()),
                grpc.StatusCode.UNAUTHENTICATED,
            )
        await expect_error(
            h.api.Login(login("acme", "alice@acme.test"), context()), grpc.StatusCode.RESOURCE_EXHAUSTED
        )


async def test_a_refresh_token_rotates_once_and_reuse_revokes_the_session(identity: Harness) -> None:
    h = identity
    await member(h, "acme", "alice@acme.test", TRADER)
    with as_caller("", caller="gateway"):
        first = (await h.api.Login(login("acme", "alice@acme.test"), context())).tokens.refresh_token
        second = (
            await h.api.RefreshToken(pb.RefreshTokenRequest(refresh_token=first), context())
        ).tokens.refresh_token
        reused = await expect_error(
            h.api.RefreshToken(pb.RefreshTokenRequest(refresh_token=first), context()),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        # The reuse revoked the whole session: the current token is dead too.
        await expect_error(
            h.api.RefreshToken(pb.RefreshTokenRequest(refresh_token=second), context()),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        await expect_error(
            h.api.RefreshToken(pb.RefreshTokenRequest(refresh_token="rt_garbage"), context()),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    assert reason(reused) == "REFRESH_TOKEN_REUSED"


async def test_users_are_created_once_per_idempotency_key(identity: Harness) -> None:
    h = identity
    admin = Caller(await member(h, "acme", "admin@acme.test", ADMIN))
    request = pb.CreateUserRequest(
        email="bob@acme.test", display_name="Bob", password=PASSWORD, roles=[pb.ROLE_TRADER]
    )
    with admin("key-1"):
        created = await h.api.CreateUser(request, context())
        again = await h.api.CreateUser(request, context())
        other = pb.CreateUserRequest(email="carol@acme.test", password=PASSWORD, roles=[pb.ROLE_VIEWER])
        await expect_error(h.api.CreateUser(other, context()), grpc.StatusCode.FAILED_PRECONDITION)
    assert again == created
    with admin("key-2"):
        await expect_error(h.api.CreateUser(request, context()), grpc.StatusCode.ALREADY_EXISTS)
    created_events = [p for _, p in h.store.events if isinstance(p, ev.UserCreated)]
    assert [e.email for e in created_events] == ["admin@acme.test", "bob@acme.test"]


async def test_another_tenant_never_sees_a_tenants_users_or_keys(identity: Harness) -> None:
    h = identity
    acme = Caller(await member(h, "acme", "alice@acme.test", TRADER))
    other = Caller(await member(h, "globex", "admin@globex.test", ADMIN, TRADER))
    with acme():
        key = (
            await h.api.CreateApiKey(pb.CreateApiKeyRequest(name="ci", scopes=["orders:read"]), context())
        ).api_key
    with other():
        listed = await h.api.ListUsers(pb.ListUsersRequest(), context())
        assert [u.email for u in listed.users] == ["admin@globex.test"]
        await expect_error(
            h.api.GetUser(pb.GetUserRequest(user_id=acme.member.user_id), context()),
            grpc.StatusCode.NOT_FOUND,
        )
        await expect_error(
            h.api.RevokeApiKey(pb.RevokeApiKeyRequest(api_key_id=key.api_key_id), context()),
            grpc.StatusCode.NOT_FOUND,
        )
        assert list((await h.api.ListApiKeys(pb.ListApiKeysRequest(), context())).api_keys) == []
        await expect_error(
            h.api.GetTenant(pb.GetTenantRequest(tenant_id=acme.member.tenant_id), context()),
            grpc.StatusCode.NOT_FOUND,
        )


async def test_an_api_key_acts_until_revoked(identity: Harness) -> None:
    h = identity
    alice = Caller(await member(h, "acme", "alice@acme.test", TRADER))
    with alice():
        created = await h.api.CreateApiKey(
            pb.CreateApiKeyRequest(name="ci", scopes=["orders:read"]), context()
        )
        principal = await h.api_keys.principal(token_hash(created.secret))
        assert principal is not None and principal.scopes == {"orders:read"}
        assert principal.subject == alice.member.user_id
        await expect_error(
            h.api.CreateApiKey(pb.CreateApiKeyRequest(name="ci"), context()), grpc.StatusCode.ALREADY_EXISTS
        )
        await expect_error(
            h.api.CreateApiKey(pb.CreateApiKeyRequest(name="wide", scopes=["admin"]), context()),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        revoked = await h.api.RevokeApiKey(
            pb.RevokeApiKeyRequest(api_key_id=created.api_key.api_key_id), context()
        )
        listed = await h.api.ListApiKeys(pb.ListApiKeysRequest(include_revoked=True), context())
    assert revoked.api_key.HasField("revoked_at")
    assert await h.api_keys.principal(token_hash(created.secret)) is None
    assert [k.api_key_id for k in listed.api_keys] == [created.api_key.api_key_id]


async def test_the_last_admin_keeps_the_admin_role(identity: Harness) -> None:
    h = identity
    admin = Caller(await member(h, "acme", "admin@acme.test", ADMIN))
    request = pb.UpdateUserRolesRequest(user_id=admin.member.user_id, roles=[pb.ROLE_TRADER])
    with admin():
        await expect_error(h.api.UpdateUserRoles(request, context()), grpc.StatusCode.FAILED_PRECONDITION)
        user = await h.api.GetUser(pb.GetUserRequest(user_id=admin.member.user_id), context())
    assert list(user.user.roles) == [pb.ROLE_ADMIN]


async def test_only_platform_operators_create_tenants(identity: Harness) -> None:
    h = identity
    tenant_admin = Caller(await member(h, "acme", "admin@acme.test", ADMIN))
    operator = Caller(await member(h, "platform", "operator@platform.test", ADMIN))
    request = pb.CreateTenantRequest(
        slug="initech", display_name="Initech", admin_email="boss@initech.test", admin_password=PASSWORD
    )
    with tenant_admin():
        await expect_error(h.api.CreateTenant(request, context()), grpc.StatusCode.PERMISSION_DENIED)
    with operator("create-initech"):
        created = await h.api.CreateTenant(request, context())
        assert await h.api.CreateTenant(request, context()) == created  # the same key: the same answer
    with operator("create-initech-again"):
        await expect_error(h.api.CreateTenant(request, context()), grpc.StatusCode.ALREADY_EXISTS)
    with operator():
        listed = await h.api.ListTenants(pb.ListTenantsRequest(), context())
    assert {t.slug for t in listed.tenants} == {"platform", "acme", "initech"}
    with as_caller(created.tenant.tenant_id, subject="x", scopes=["orders:read"]):
        await expect_error(
            h.api.ListUsers(pb.ListUsersRequest(), context()), grpc.StatusCode.PERMISSION_DENIED
        )
