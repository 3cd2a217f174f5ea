"""NATS connections of tests.

The platform's server refuses anonymous connections: a test connects either
as a principal (``connect_nats(settings, "features")``: exactly that
service's rights) or, to drive invented subjects and streams or to watch
every tenant, as the test harness, a user that exists only on servers whose
settings turn ``nats.test_harness`` on (the session's, isolated test
platforms, the benchmark's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from google.protobuf import message as pb_message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging.envelope import decode_envelope, unpack
from runtime.messaging.nats.connect import connect_nats
from runtime.security.nats_permissions import HARNESS


async def connect_harness(settings: Settings, **options: Any) -> NatsClient:
    """A connection with every right, for test scaffolding (never for the
    security checks, which use the principals' own credentials)."""
    options.setdefault("connect_timeout", 2)
    return await connect_nats(settings, HARNESS, **options)


@asynccontextmanager
async def received_events(
    settings: Settings, principal: str, subject: str
) -> AsyncIterator[list[pb_message.Message]]:
    """The payloads of the events arriving on `subject`, in order, as
    `principal` receives them (its own NATS rights)."""
    received: list[pb_message.Message] = []
    nc = await connect_nats(settings, principal)

    async def on_message(msg: Msg) -> None:
        received.append(unpack(decode_envelope(msg.data), event_registry()))

    await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    try:
        yield received
    finally:
        await nc.close()
