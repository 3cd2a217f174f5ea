"""Decision's in-memory adapters pass the ports' suites (tests/suites/decision_ports.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.decision.adapters.memory import (
    MemoryInstrumentDirectory,
    MemorySignalStore,
    MemoryStrategyStore,
)
from tests.suites.decision_ports import (
    ANSWER_WITHIN,
    INTENT_TTL,
    InstrumentDirectorySuite,
    Outbox,
    Publish,
    SignalStoreSuite,
    StrategyStoreSuite,
    announce_strategy,
)


class TestMemoryStrategyStore(StrategyStoreSuite):
    @pytest.fixture
    def strategies(self) -> MemoryStrategyStore:
        return MemoryStrategyStore(announce=announce_strategy)

    @pytest.fixture
    def outbox(self, strategies: MemoryStrategyStore) -> Outbox:
        async def written(tenant: str) -> list[str]:
            return [r.event_id for r in strategies.outbox if r.tenant_id == tenant]

        return written


class TestMemorySignalStore(SignalStoreSuite):
    @pytest.fixture
    def signals(self) -> MemorySignalStore:
        return MemorySignalStore(intent_ttl=INTENT_TTL, answer_within=ANSWER_WITHIN)

    @pytest.fixture
    def outbox(self, signals: MemorySignalStore) -> Outbox:
        async def written(tenant: str) -> list[str]:
            return [r.event_id for r in signals.outbox if r.tenant_id == tenant]

        return written


class TestMemoryInstrumentDirectory(InstrumentDirectorySuite):
    @pytest.fixture
    def directory(self) -> MemoryInstrumentDirectory:
        return MemoryInstrumentDirectory()

    @pytest.fixture
    def publish(self, directory: MemoryInstrumentDirectory) -> Publish:
        async def publish(symbols: Sequence[str]) -> None:
            directory.publish(symbols)

        return publish
