"""The whole platform, started the way `./dev run` starts it (the supervisor:
infrastructure reused or started, then eleven service processes), on spare
ports and a fresh database, once for the contract tests that need it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import pytest_asyncio

from runtime.config import Settings
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from services.decision import train
from services.decision.settings import TrainingSettings
from services.identity.apikeys import ApiKeyPrincipal, new_secret, publish, withdraw
from services.identity.domain import token_hash
from tests.support.otlp import Collector, otlp_collector
from tools.supervisor import isolated_settings, platform_running


@dataclass
class RunningPlatform:
    settings: Settings
    startup_s: float
    # Every span the platform's processes export (OTLP/gRPC, as to an operator's backend).
    traces: Collector
    stopped: bool = False


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def platform(
    infra_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    settings = isolated_settings(infra_settings, tmp_path_factory.mktemp("platform-var"))
    # Small models, trained before the start (where the decision process looks
    # by default): otherwise it trains the full default set during start-up,
    # which can take a minute on a loaded 2-core CI machine.
    await asyncio.to_thread(
        train.train, settings.var_dir / "models", TrainingSettings(ticks_per_symbol=2500, seed=5)
    )
    async with otlp_collector() as collector:
        telemetry = settings.telemetry.model_copy(update={"otlp_endpoint": collector.endpoint})
        settings = settings.model_copy(update={"telemetry": telemetry})
        # 120 s: a generous bound for a loaded machine; the README's 60 s claim is
        # checked by test_all_eleven_services_serving_within_60s on the start-up time.
        async with platform_running(settings, ready_timeout=120) as startup_s:
            yield RunningPlatform(settings, startup_s, collector)


@dataclass(frozen=True)
class FreshTenant:
    """A tenant of its own for a test that changes tenant-wide state (limits,
    trading state, roles) or needs the default limits: its administrator's
    login and ids."""

    slug: str
    email: str
    password: str
    tenant_id: str
    admin_user_id: str

    def login_body(self) -> dict[str, str]:
        return {"tenantSlug": self.slug, "email": self.email, "password": self.password}


async def create_tenant(platform: RunningPlatform, prefix: str) -> FreshTenant:
    """A new tenant made through the gateway by a platform operator (an API
    key of the operators' tenant, whose id is read from the platform's database)."""
    conn = await asyncpg.connect(platform.settings.postgres.dsn)
    try:
        operators = await conn.fetchval("SELECT tenant_id FROM identity.tenants WHERE is_platform")
    finally:
        await conn.close()
    redis = open_redis(platform.settings, REDIS_ADMIN)
    secret = new_secret()
    operator = ApiKeyPrincipal(
        str(uuid.uuid4()), operators, str(uuid.uuid4()), frozenset({"admin"}), frozenset({"ADMIN"}), None
    )
    await publish(redis, token_hash(secret), operator, now=time.time())
    slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
    tenant = FreshTenant(slug, f"admin@{slug}.test", f"Pw-{uuid.uuid4().hex}", "", "")
    try:
        base = f"http://127.0.0.1:{platform.settings.gateway.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=20) as gw:
            created = await gw.post(
                "/v1/tenants",
                json={
                    "slug": slug,
                    "displayName": prefix,
                    "adminEmail": tenant.email,
                    "adminPassword": tenant.password,
                },
                headers={"X-Api-Key": secret},
            )
            assert created.status_code == 200, created.text
            doc = created.json()
            tenant = dataclasses.replace(
                tenant, tenant_id=doc["tenant"]["tenantId"], admin_user_id=doc["adminUser"]["userId"]
            )
            # The administrator trades too (ADMIN manages, TRADER places orders).
            login = await gw.post("/v1/auth/login", json=tenant.login_body())
            assert login.status_code == 200, login.text
            roles = await gw.put(
                f"/v1/users/{tenant.admin_user_id}/roles",
                json={"roles": ["ROLE_ADMIN", "ROLE_TRADER"]},
                headers={"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"},
            )
            assert roles.status_code == 200, roles.text
    finally:
        await withdraw(redis, token_hash(secret))
        await redis.aclose()
    return tenant
