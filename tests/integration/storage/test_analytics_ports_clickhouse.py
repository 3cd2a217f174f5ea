"""Analytics' ClickHouse store passes the port's suite (tests/suites/analytics_ports.py)
on the session's chdb, in a database of its own, as the service opens it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from runtime.config import Settings
from services.analytics.adapters.clickhouse import ClickHouseAnalyticsStore
from tests.suites.analytics_ports import AnalyticsStoreSuite

pytestmark = pytest.mark.integration

DATABASE = f"analytics_ports_{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def clickhouse_store(infra_settings: Settings) -> AsyncIterator[ClickHouseAnalyticsStore]:
    store = ClickHouseAnalyticsStore(infra_settings.clickhouse, database=DATABASE)
    yield store
    await store.close()


class TestClickHouseAnalyticsStore(AnalyticsStoreSuite):
    @pytest.fixture
    def store(self, clickhouse_store: ClickHouseAnalyticsStore) -> ClickHouseAnalyticsStore:
        return clickhouse_store
