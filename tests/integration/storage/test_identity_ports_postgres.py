"""The identity port suites on the real servers: the store and the signing
keys in PostgreSQL (identity's schema; tenant transactions under row-level
security as the tenant role), login failures and the API key cache in Redis."""

from __future__ import annotations

import os

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from runtime.storage.migrations import migrate_pool
from services.identity.adapters.postgres import PostgresIdentityStore, PostgresSigningKeyStore
from services.identity.adapters.redis import RedisApiKeyCache, RedisLoginFailures
from tests.suites.identity_ports import (
    ApiKeyCacheSuite,
    IdentityStoreSuite,
    LoginFailuresSuite,
    SigningKeyStoreSuite,
)

pytestmark = pytest.mark.integration


class TestPostgresIdentityStore(IdentityStoreSuite):
    @pytest_asyncio.fixture(loop_scope="session")
    async def store(self, pg_pool: asyncpg.Pool) -> PostgresIdentityStore:
        await migrate_pool(pg_pool, "identity")
        return PostgresIdentityStore(pg_pool)


class TestPostgresSigningKeyStore(SigningKeyStoreSuite):
    @pytest_asyncio.fixture(loop_scope="session")
    async def keys(self, pg_pool: asyncpg.Pool) -> PostgresSigningKeyStore:
        await migrate_pool(pg_pool, "identity")
        return PostgresSigningKeyStore(pg_pool, os.urandom(32))


class TestRedisLoginFailures(LoginFailuresSuite):
    @pytest.fixture
    def failures(self, redis_client: Redis) -> RedisLoginFailures:
        return RedisLoginFailures(redis_client)


class TestRedisApiKeyCache(ApiKeyCacheSuite):
    @pytest.fixture
    def cache(self, redis_client: Redis) -> RedisApiKeyCache:
        return RedisApiKeyCache(redis_client)
