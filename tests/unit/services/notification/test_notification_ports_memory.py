"""The WebhookStore port suite on the in-memory adapter."""

from __future__ import annotations

import pytest

from services.notification.adapters.memory import MemoryWebhookStore
from tests.suites.notification_ports import WebhookStoreSuite


class TestMemoryWebhookStore(WebhookStoreSuite):
    @pytest.fixture
    def store(self) -> MemoryWebhookStore:
        return MemoryWebhookStore()
