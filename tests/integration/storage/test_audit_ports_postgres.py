"""The AuditStore port suite on PostgreSQL (audit's schema: every statement as
audit's tenant role, which may only SELECT and INSERT, under row-level security)."""

from __future__ import annotations

import asyncpg
import pytest
import pytest_asyncio

from runtime.storage.migrations import migrate_pool
from services.audit.adapters.postgres import PostgresAuditStore
from tests.suites.audit_ports import AuditStoreSuite

pytestmark = pytest.mark.integration


class TestPostgresAuditStore(AuditStoreSuite):
    @pytest_asyncio.fixture(loop_scope="session")
    async def store(self, pg_pool: asyncpg.Pool) -> PostgresAuditStore:
        await migrate_pool(pg_pool, "audit")
        store = PostgresAuditStore(pg_pool)
        await store.secure()
        return store
