"""NATS connections of tests.

The platform's server refuses anonymous connections: a test connects either
as a principal (``connect_nats(settings, "features")``: exactly that
service's rights) or, to drive invented subjects and streams or to watch
every tenant, as the test harness, a user that exists only on servers whose
settings turn ``nats.test_harness`` on (the session's, isolated test
platforms, the benchmark's)."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NatsClient

from runtime.config import Settings
from runtime.messaging.nats.connect import connect_nats
from runtime.security.nats_permissions import HARNESS


async def connect_harness(settings: Settings, **options: Any) -> NatsClient:
    """A connection with every right, for test scaffolding (never for the
    security checks, which use the principals' own credentials)."""
    options.setdefault("connect_timeout", 2)
    return await connect_nats(settings, HARNESS, **options)
