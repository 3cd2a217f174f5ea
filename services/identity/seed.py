"""Idempotent start-up data: the platform tenant, and for local use the demo
tenant with its trader (the README logs in with it) and, when a password is
configured, a platform operator. Safe with several replicas starting at once
(unique slug / e-mail; the loser of a race just reads the winner's row)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from trading.identity.v1 import events_pb2 as ev
from trading.identity.v1 import identity_service_pb2 as pb

from runtime.messaging import uuid7
from services.identity.domain import ADMIN, TRADER, Passwords, normalize_email
from services.identity.ports import AlreadyExists, IdentityStore, TenantRow, UserRow
from services.identity.settings import IdentitySettings

log = logging.getLogger(__name__)

PLATFORM_SLUG = "platform"
DEMO_SLUG = "demo"
DEMO_EMAIL = "trader@demo.local"
DEMO_PASSWORD = "demo-password"  # the documented local demo login


async def ensure_tenant(
    store: IdentityStore, slug: str, display_name: str, *, is_platform: bool = False
) -> str:
    """The id of the tenant `slug`, created if missing."""
    async with store.anonymous() as tx:
        found = await tx.login_tenant(slug)
    if found is not None:
        return found[0]
    row = TenantRow(str(uuid7()), slug, display_name, "ACTIVE", is_platform, datetime.now(UTC))
    try:
        async with store.tenant(row.tenant_id) as tx:
            await tx.insert_tenant(row)
            event = ev.TenantCreated(tenant_id=row.tenant_id, slug=slug, display_name=display_name)
            event.created_at.FromDatetime(row.created_at)
            await tx.record(row.tenant_id, event)
    except AlreadyExists:
        return await ensure_tenant(store, slug, display_name, is_platform=is_platform)
    log.info("identity: created tenant %s (%s)", slug, row.tenant_id)
    return row.tenant_id


async def ensure_user(
    store: IdentityStore,
    passwords: Passwords,
    tenant_id: str,
    email: str,
    password: str,
    roles: tuple[str, ...],
) -> None:
    """Create the user if the e-mail is not registered in the tenant (never changes an existing one)."""
    email = normalize_email(email)
    async with store.tenant(tenant_id) as tx:
        if await tx.get_user_by_email(email) is not None:
            return
    password_hash = await asyncio.to_thread(passwords.hash, password)
    now = datetime.now(UTC)
    row = UserRow(str(uuid7()), tenant_id, email, email.split("@")[0], password_hash, roles, True, now)
    try:
        async with store.tenant(tenant_id) as tx:
            await tx.insert_user(row)
            created = ev.UserCreated(user_id=row.user_id, email=email, display_name=row.display_name)
            created.roles.extend(pb.Role.Value(f"ROLE_{r}") for r in roles)
            created.created_at.FromDatetime(now)
            await tx.record(tenant_id, created)
    except AlreadyExists:
        return
    log.info("identity: created user %s in tenant %s", email, tenant_id)


async def seed(store: IdentityStore, passwords: Passwords, settings: IdentitySettings) -> str:
    """Create the start-up data; returns the platform tenant's id."""
    platform = await ensure_tenant(store, PLATFORM_SLUG, "Platform operators", is_platform=True)
    if settings.platform_admin_password:
        await ensure_user(
            store,
            passwords,
            platform,
            settings.platform_admin_email,
            settings.platform_admin_password,
            (ADMIN,),
        )
    if settings.seed_demo:
        demo = await ensure_tenant(store, DEMO_SLUG, "Demo")
        await ensure_user(store, passwords, demo, DEMO_EMAIL, DEMO_PASSWORD, (TRADER,))
    return platform
