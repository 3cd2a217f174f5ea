"""Wiring of the identity service: what it needs, what it serves, and what it
does at start-up (signing key, seed data, API key cache rebuild, outbox relay).
Settings: IdentitySettings (env TRADING_IDENTITY__*)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from redis.asyncio import Redis
from trading.identity.v1 import identity_service_pb2_grpc as pb_grpc

from runtime.contracts import method_policy, services
from runtime.outbox import OutboxRelay, PostgresOutbox
from runtime.resources import Resources
from runtime.security.credentials import credentials_for
from runtime.service import ServiceSpec
from services.identity import apikeys
from services.identity.adapters.postgres import PostgresIdentityStore, PostgresSigningKeyStore
from services.identity.adapters.redis import RedisApiKeyCache, RedisLoginFailures
from services.identity.api import IDENTITY_SERVICE, IdentityApi
from services.identity.domain import PasswordPolicy, Passwords, RoleScopes
from services.identity.keys import KeyRing, key_encryption_key
from services.identity.ports import IdentityStore
from services.identity.seed import seed
from services.identity.settings import IdentitySettings

log = logging.getLogger(__name__)


def declared_scopes() -> set[str]:
    """Every scope some RPC of the contracts asks for."""
    return {
        scope
        for svc in services()
        for method in svc.methods
        for scope in method_policy(f"/{svc.full_name}/{method.name}").scopes
    }


async def rebuild_api_key_cache(store: IdentityStore, redis: Redis, role_scopes: RoleScopes) -> int:
    """Make Redis hold exactly the active keys of PostgreSQL (platform job)."""
    async with store.platform() as tx:
        keys = await tx.active_api_keys()
        roles = await tx.users_roles(sorted({k.owner_user_id for k in keys}))
    entries = []
    for key in keys:
        owner_roles = frozenset(roles.get(key.owner_user_id, ()))
        entries.append(
            (
                key.key_hash,
                apikeys.ApiKeyPrincipal(
                    api_key_id=key.api_key_id,
                    tenant_id=key.tenant_id,
                    subject=key.owner_user_id,
                    scopes=frozenset(key.scopes) & role_scopes.of_roles(owner_roles),
                    roles=owner_roles,
                    expires_at=None if key.expires_at is None else key.expires_at.timestamp(),
                ),
            )
        )
    return await apikeys.resync(redis, entries, now=time.time())


async def build(resources: Resources, identity_settings: IdentitySettings | None = None) -> Mapping[str, Any]:
    settings = identity_settings or IdentitySettings()
    pool, redis = resources.postgres, resources.redis
    store = PostgresIdentityStore(pool)
    policy = PasswordPolicy(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    )
    passwords = await asyncio.to_thread(Passwords, policy)
    role_scopes = RoleScopes.from_declared(declared_scopes())
    kek = key_encryption_key(resources.settings, settings.key_encryption_key)
    ring = KeyRing(
        PostgresSigningKeyStore(pool, kek),
        access_ttl_s=settings.access_token_ttl_s,
        rotate_after_s=settings.signing_key_rotate_after_s,
        reload_every_s=settings.key_reload_s,
    )
    await ring.jwks()  # creates the first signing key if there is none
    platform_tenant = await seed(store, passwords, settings)
    kept = await rebuild_api_key_cache(store, redis, role_scopes)
    log.info("identity: %d active API keys in the cache", kept)
    relay = OutboxRelay(PostgresOutbox(pool, "identity"), kafka=resources.kafka_publisher)
    await relay.start()
    relay.wake()
    resources.on_close(relay.stop)
    api = IdentityApi(
        store, RedisLoginFailures(redis), RedisApiKeyCache(redis), ring, relay, passwords, role_scopes,
        settings,
        platform_tenant_id=platform_tenant,
        delegation_signer=credentials_for(resources.settings, "identity").tokens,
    )  # fmt: skip
    return {IDENTITY_SERVICE: api}


def make_spec(identity_settings: IdentitySettings | None = None) -> ServiceSpec:
    """The service with the given settings (default: from the environment)."""
    return ServiceSpec(
        name="identity",
        needs=("postgres", "redis", "kafka"),
        apis=[(IDENTITY_SERVICE, pb_grpc.add_IdentityServiceServicer_to_server)],
        build=partial(build, identity_settings=identity_settings),
    )


SPEC = make_spec()
