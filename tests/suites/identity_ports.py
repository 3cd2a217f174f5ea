"""The contracts of identity's ports (services.identity.ports), run against each
adapter: the ``TestMemory*`` classes (unit) and the PostgreSQL/Redis ones
(integration) subclass these suites and provide the ``store`` / ``keys`` /
``failures`` / ``cache`` fixture."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from trading.identity.v1 import events_pb2 as ev

from runtime.messaging import uuid7
from services.identity.apikeys import ApiKeyPrincipal
from services.identity.domain import ADMIN, TRADER, VIEWER
from services.identity.ports import (
    AlreadyExists,
    ApiKeyCache,
    ApiKeyRow,
    IdentityStore,
    LoginFailures,
    SigningKeyStore,
    TenantRow,
    UnknownTenant,
    UserRow,
)

NOW = datetime.now(UTC)


def tenant_row() -> TenantRow:
    return TenantRow(str(uuid7()), f"t-{uuid.uuid4().hex[:12]}", "Test tenant", "ACTIVE", False, NOW)


def user_row(tenant_id: str, email: str = "", roles: tuple[str, ...] = (TRADER,)) -> UserRow:
    email = email or f"u-{uuid.uuid4().hex[:8]}@example.test"
    return UserRow(str(uuid7()), tenant_id, email, "Test user", "argon2-hash", roles, True, NOW)


def key_row(user: UserRow, name: str, *, expires_at: datetime | None = None) -> ApiKeyRow:
    return ApiKeyRow(
        str(uuid7()), user.tenant_id, user.user_id, name, "tk_abcd", uuid.uuid4().bytes * 2,
        ("orders:read",), NOW, expires_at, None,
    )  # fmt: skip


async def new_tenant(store: IdentityStore) -> TenantRow:
    row = tenant_row()
    async with store.tenant(row.tenant_id) as tx:
        await tx.insert_tenant(row)
    return row


async def with_user(store: IdentityStore, roles: tuple[str, ...] = (TRADER,)) -> tuple[TenantRow, UserRow]:
    tenant = await new_tenant(store)
    user = user_row(tenant.tenant_id, roles=roles)
    async with store.tenant(tenant.tenant_id) as tx:
        await tx.insert_user(user)
    return tenant, user


class IdentityStoreSuite:
    """Transactions, the three kinds of visibility, uniqueness, refresh token
    rotation, API keys and idempotent responses."""

    async def test_rows_read_back_in_their_tenant_only(self, store: IdentityStore) -> None:
        a, alice = await with_user(store)
        b, _ = await with_user(store)
        async with store.tenant(a.tenant_id) as tx:
            assert await tx.get_tenant(a.tenant_id) == a
            assert await tx.get_tenant_by_slug(a.slug) == a
            assert await tx.get_user(alice.user_id) == alice
            assert await tx.get_user_by_email(alice.email) == alice
        async with store.tenant(b.tenant_id) as tx:
            assert await tx.get_tenant(a.tenant_id) is None
            assert await tx.get_user(alice.user_id) is None
            assert await tx.get_user_by_email(alice.email) is None
            assert [t.tenant_id for t in await tx.list_tenants(after="", limit=100)] == [b.tenant_id]
        async with store.platform() as tx:
            assert await tx.get_tenant(a.tenant_id) == a
            assert await tx.get_user(alice.user_id) == alice

    async def test_anonymous_sees_only_the_slug_lookup(self, store: IdentityStore) -> None:
        a, alice = await with_user(store)
        async with store.anonymous() as tx:
            assert await tx.login_tenant(a.slug) == (a.tenant_id, "ACTIVE")
            assert await tx.login_tenant("no-such-slug") is None
            assert await tx.get_tenant(a.tenant_id) is None
            assert await tx.get_user(alice.user_id) is None

    async def test_an_empty_tenant_is_refused(self, store: IdentityStore) -> None:
        with pytest.raises(ValueError):
            async with store.tenant("") as tx:
                await tx.get_tenant("")

    async def test_uniqueness(self, store: IdentityStore) -> None:
        a, alice = await with_user(store)
        b = await new_tenant(store)
        taken = TenantRow(str(uuid7()), a.slug, "Again", "ACTIVE", False, NOW)
        with pytest.raises(AlreadyExists):
            async with store.tenant(taken.tenant_id) as tx:
                await tx.insert_tenant(taken)
        async with store.tenant(a.tenant_id) as tx:
            with pytest.raises(AlreadyExists):
                await tx.insert_user(user_row(a.tenant_id, email=alice.email))
        async with store.tenant(b.tenant_id) as tx:
            await tx.insert_user(user_row(b.tenant_id, email=alice.email))  # another tenant: fine
        ghost = str(uuid7())
        with pytest.raises(UnknownTenant):
            async with store.tenant(ghost) as tx:
                await tx.insert_user(user_row(ghost))

    async def test_a_failed_transaction_changes_nothing(self, store: IdentityStore) -> None:
        row = tenant_row()
        with pytest.raises(RuntimeError):
            async with store.tenant(row.tenant_id) as tx:
                await tx.insert_tenant(row)
                await tx.insert_user(user_row(row.tenant_id))
                await tx.record(row.tenant_id, ev.TenantCreated(tenant_id=row.tenant_id, slug=row.slug))
                raise RuntimeError("the servicer failed after writing")
        async with store.anonymous() as tx:
            assert await tx.login_tenant(row.slug) is None
        async with store.tenant(row.tenant_id) as tx:  # the tenant's id is free again
            await tx.insert_tenant(row)

    async def test_users_page_and_admins_are_locked_in_order(self, store: IdentityStore) -> None:
        tenant = await new_tenant(store)
        users = [
            user_row(tenant.tenant_id, roles=(ADMIN,)),
            user_row(tenant.tenant_id, roles=(VIEWER,)),
            user_row(tenant.tenant_id, roles=(ADMIN, TRADER)),
        ]
        async with store.tenant(tenant.tenant_id) as tx:
            for user in users:
                await tx.insert_user(user)
            first = await tx.list_users(after="", limit=2)
            rest = await tx.list_users(after=first[-1].user_id, limit=2)
            assert first + rest == users
            assert await tx.lock_admins() == [users[0].user_id, users[2].user_id]
            await tx.set_roles(users[0].user_id, (VIEWER,))
            await tx.set_password_hash(users[1].user_id, "new-hash")
        async with store.tenant(tenant.tenant_id) as tx:
            assert await tx.lock_admins() == [users[2].user_id]
            changed = await tx.get_user(users[1].user_id)
            assert changed is not None and changed.password_hash == "new-hash"
            roles = await tx.users_roles([u.user_id for u in users] + [str(uuid7())])
            assert roles == {
                users[0].user_id: (VIEWER,),
                users[1].user_id: (VIEWER,),
                users[2].user_id: (ADMIN, TRADER),
            }

    async def test_a_refresh_token_is_claimed_once(self, store: IdentityStore) -> None:
        tenant, user = await with_user(store)
        digest, family = uuid.uuid4().bytes * 2, str(uuid7())
        async with store.tenant(tenant.tenant_id) as tx:
            await tx.insert_refresh(digest, tenant.tenant_id, user.user_id, family, NOW + timedelta(days=1))

        async def claim() -> bool:
            async with store.tenant(tenant.tenant_id) as tx:
                return await tx.claim_refresh(digest) is not None

        assert sorted(await asyncio.gather(claim(), claim(), claim())) == [False, False, True]
        async with store.tenant(tenant.tenant_id) as tx:
            found = await tx.find_refresh(digest)
            assert found is not None and found.rotated_at is not None and found.family_id == family
        other, _ = await with_user(store)
        async with store.tenant(other.tenant_id) as tx:
            assert await tx.find_refresh(digest) is None

    async def test_revocation_counts_usable_tokens_only(self, store: IdentityStore) -> None:
        tenant, user = await with_user(store)
        family = str(uuid7())
        usable = [uuid.uuid4().bytes * 2 for _ in range(2)]
        expired, other_family = uuid.uuid4().bytes * 2, uuid.uuid4().bytes * 2
        async with store.tenant(tenant.tenant_id) as tx:
            for digest in usable:
                await tx.insert_refresh(
                    digest, tenant.tenant_id, user.user_id, family, NOW + timedelta(days=1)
                )
            await tx.insert_refresh(expired, tenant.tenant_id, user.user_id, family, NOW - timedelta(days=1))
            await tx.insert_refresh(
                other_family, tenant.tenant_id, user.user_id, str(uuid7()), NOW + timedelta(days=1)
            )
            assert await tx.claim_refresh(expired) is None
        async with store.tenant(tenant.tenant_id) as tx:
            assert await tx.revoke_family(family) == 2
            assert await tx.revoke_family(family) == 0
            assert await tx.claim_refresh(usable[0]) is None
            assert await tx.revoke_user_sessions(user.user_id) == 1  # the other family's token

    async def test_api_keys_by_owner_name_and_state(self, store: IdentityStore) -> None:
        tenant, alice = await with_user(store)
        bob = user_row(tenant.tenant_id)
        async with store.tenant(tenant.tenant_id) as tx:
            await tx.insert_user(bob)
        ci, old = key_row(alice, "ci"), key_row(alice, "old", expires_at=NOW - timedelta(hours=1))
        bobs = key_row(bob, "ci")  # another owner may use the name
        async with store.tenant(tenant.tenant_id) as tx:
            for row in (ci, old, bobs):
                await tx.insert_api_key(row)
            with pytest.raises(AlreadyExists):
                await tx.insert_api_key(key_row(alice, "ci"))
        async with store.tenant(tenant.tenant_id) as tx:
            await tx.revoke_api_key(ci.api_key_id, NOW)
            await tx.revoke_api_key(ci.api_key_id, NOW + timedelta(hours=1))  # stays revoked at NOW
            again = key_row(alice, "ci")
            await tx.insert_api_key(again)  # the revoked one freed the name
            revoked = await tx.get_api_key(ci.api_key_id, for_update=True)
            assert revoked is not None and revoked.revoked_at == NOW
            listed = await tx.list_api_keys(owner=alice.user_id, before=None, limit=10, include_revoked=True)
            assert [k.api_key_id for k in listed] == [again.api_key_id, old.api_key_id, ci.api_key_id]
            usable = await tx.list_api_keys(owner=None, before=None, limit=10, include_revoked=False)
            assert [k.api_key_id for k in usable] == [again.api_key_id, bobs.api_key_id]
            page = await tx.list_api_keys(owner=None, before=again.api_key_id, limit=1, include_revoked=True)
            assert [k.api_key_id for k in page] == [bobs.api_key_id]
            active = await tx.active_api_keys(owner=alice.user_id)
            assert [k.api_key_id for k in active] == [again.api_key_id]
        other, _ = await with_user(store)
        async with store.tenant(other.tenant_id) as tx:
            assert await tx.get_api_key(again.api_key_id) is None
            assert await tx.active_api_keys() == []
        async with store.platform() as tx:
            assert {again.api_key_id, bobs.api_key_id} <= {k.api_key_id for k in await tx.active_api_keys()}

    async def test_idempotent_responses_per_tenant(self, store: IdentityStore) -> None:
        a, _ = await with_user(store)
        b, _ = await with_user(store)
        async with store.tenant(a.tenant_id) as tx:
            assert await tx.idempotent_response(a.tenant_id, "CreateUser", "k-1") is None
            await tx.save_idempotent_response(a.tenant_id, "CreateUser", "k-1", b"request", b"response")
        async with store.tenant(a.tenant_id) as tx:
            assert await tx.idempotent_response(a.tenant_id, "CreateUser", "k-1") == (b"request", b"response")
            assert await tx.idempotent_response(a.tenant_id, "CreateApiKey", "k-1") is None
        async with store.tenant(b.tenant_id) as tx:
            assert await tx.idempotent_response(a.tenant_id, "CreateUser", "k-1") is None
            assert await tx.idempotent_response(b.tenant_id, "CreateUser", "k-1") is None


class SigningKeyStoreSuite:
    """One current key, rotation, and retired keys published in their grace period."""

    async def test_rotation_retires_and_publishes(self, keys: SigningKeyStore) -> None:
        first = await keys.rotate(retire_grace_s=3600)
        current = await keys.current()
        assert current is not None and current.kid == first
        assert await keys.rotate(retire_grace_s=3600, only_if_older_than_s=3600) == first  # young enough
        second = await keys.rotate(retire_grace_s=3600)
        assert second != first
        current = await keys.current()
        assert current is not None and current.kid == second
        published = [jwk["kid"] for jwk in await keys.published()]
        assert published[:2] == [second, first]
        third = await keys.rotate(retire_grace_s=0)  # `second` is not published any more
        assert [jwk["kid"] for jwk in await keys.published()][:2] == [third, first]


class LoginFailuresSuite:
    """Failures count within their window; a success clears them."""

    async def test_failures_count_until_cleared(self, failures: LoginFailures) -> None:
        key = f"test:login:{uuid.uuid4().hex}"
        assert await failures.count(key) == (0, 0.0)
        await failures.add(key, window_s=60)
        await failures.add(key, window_s=5)  # the window is the first failure's
        count, ttl = await failures.count(key)
        assert count == 2 and 55 <= ttl <= 60
        await failures.clear(key)
        assert await failures.count(key) == (0, 0.0)


def principal(api_key_id: str, expires_at: float | None = None) -> ApiKeyPrincipal:
    return ApiKeyPrincipal(
        api_key_id=api_key_id,
        tenant_id="tenant-a",
        subject="user-1",
        scopes=frozenset({"orders:read"}),
        roles=frozenset({TRADER}),
        expires_at=expires_at,
    )


class ApiKeyCacheSuite:
    """Published keys act as their principal until withdrawn or expired."""

    async def test_a_key_is_usable_until_withdrawn(self, cache: ApiKeyCache) -> None:
        digest, now = uuid.uuid4().bytes * 2, datetime.now(UTC).timestamp()
        assert await cache.principal(digest) is None
        await cache.publish(digest, principal("k1"), now=now)
        assert await cache.principal(digest) == principal("k1")
        narrowed = ApiKeyPrincipal("k1", "tenant-a", "user-1", frozenset(), frozenset({VIEWER}), None)
        await cache.publish(digest, narrowed, now=now)
        assert await cache.principal(digest) == narrowed
        await cache.withdraw(digest)
        assert await cache.principal(digest) is None
        assert await cache.last_used([]) == []
        assert await cache.last_used([str(uuid7())]) == [None]

    async def test_an_expired_key_is_not_usable(self, cache: ApiKeyCache) -> None:
        digest, now = uuid.uuid4().bytes * 2, datetime.now(UTC).timestamp()
        await cache.publish(digest, principal("k2", expires_at=now - 1), now=now)
        assert await cache.principal(digest) is None
        await cache.publish(digest, principal("k3", expires_at=now + 600), now=now)
        assert await cache.principal(digest) == principal("k3", expires_at=now + 600)
