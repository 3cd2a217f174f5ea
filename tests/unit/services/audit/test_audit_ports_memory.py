"""The AuditStore port suite on the in-memory adapter."""

from __future__ import annotations

import pytest

from services.audit.adapters.memory import MemoryAuditStore
from tests.suites.audit_ports import AuditStoreSuite


class TestMemoryAuditStore(AuditStoreSuite):
    @pytest.fixture
    def store(self) -> MemoryAuditStore:
        return MemoryAuditStore()
