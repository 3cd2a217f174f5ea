"""The WebhookStore port suite on PostgreSQL (notification's schema, row-level
security: every call runs as the tenant role of its tenant)."""

from __future__ import annotations

import asyncpg
import pytest
import pytest_asyncio

from runtime.storage.migrations import migrate_pool
from services.notification.adapters.postgres import PostgresWebhookStore
from tests.suites.notification_ports import WebhookStoreSuite

pytestmark = pytest.mark.integration


class TestPostgresWebhookStore(WebhookStoreSuite):
    @pytest_asyncio.fixture(loop_scope="session")
    async def store(self, pg_pool: asyncpg.Pool) -> PostgresWebhookStore:
        await migrate_pool(pg_pool, "notification")
        return PostgresWebhookStore(pg_pool)
