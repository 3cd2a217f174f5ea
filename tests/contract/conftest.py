"""The whole platform, started the way `./dev run` starts it (the supervisor:
infrastructure reused or started, then eleven service processes), on spare
ports and a fresh database, once for the contract tests that need it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from runtime.config import Settings
from services.decision import train
from services.decision.settings import TrainingSettings
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
