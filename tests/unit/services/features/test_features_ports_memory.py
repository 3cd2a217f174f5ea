"""Features' in-memory adapters pass the ports' suites (tests/suites/features_ports.py)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from services.features.adapters.memory import MemoryInstrumentUniverse, MemoryVectorStore
from tests.suites.features_ports import InstrumentUniverseSuite, PublishUniverse, VectorStoreSuite


class TestMemoryVectorStore(VectorStoreSuite):
    @pytest.fixture
    def vectors(self) -> MemoryVectorStore:
        return MemoryVectorStore()


class TestMemoryInstrumentUniverse(InstrumentUniverseSuite):
    @pytest.fixture
    def universe(self) -> MemoryInstrumentUniverse:
        return MemoryInstrumentUniverse()

    @pytest.fixture
    def publish_universe(self, universe: MemoryInstrumentUniverse) -> PublishUniverse:
        async def publish(symbols: Iterable[str]) -> None:
            universe.publish(symbols)

        return publish
