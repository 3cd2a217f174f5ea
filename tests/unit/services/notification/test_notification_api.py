"""NotificationService's webhook and dead-letter RPCs on the in-memory adapters.

Subscribe (a live relay of core NATS subjects) is covered against a real
nats-server in tests/integration/services/test_notification_service.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from nats.aio.client import Client as NatsClient
from trading.notification.v1 import notification_service_pb2 as pb
from trading.risk.v1 import events_pb2 as risk_events

from runtime.errors import ServiceError
from runtime.messaging import new_envelope, uuid7
from services.notification import signing
from services.notification.adapters.memory import (
    MemoryDeadLetterEntries,
    MemoryDeliveryJobs,
    MemoryWebhookStore,
)
from services.notification.api import Context, NotificationApi
from services.notification.delivery import WebhookSender
from services.notification.ports import DeadLetterRow
from services.notification.settings import NotificationSettings
from tests.support.servicers import AbortedCall, as_caller, expect_error, servicer_context

HALTED = "trading.risk.v1.TradingStateChanged"
PUBLIC_URL = "https://93.184.215.14/hooks/trading"  # an address literal: no DNS


@dataclass
class Harness:
    api: NotificationApi
    store: MemoryWebhookStore
    jobs: MemoryDeliveryJobs
    dlq: MemoryDeadLetterEntries
    box: signing.SecretBox


@pytest_asyncio.fixture
async def notification() -> AsyncIterator[Harness]:
    store, jobs, dlq = MemoryWebhookStore(), MemoryDeliveryJobs(), MemoryDeadLetterEntries()
    box = signing.SecretBox(os.urandom(32))
    sender = WebhookSender(NotificationSettings())
    # Subscribe's NATS client is never connected here (no RPC below uses it).
    api = NotificationApi(store, box, sender, jobs, NatsClient(), dead_letter_entries=dlq)
    yield Harness(api, store, jobs, dlq, box)
    await sender.close()


async def register(h: Harness, tenant: str, url: str = PUBLIC_URL) -> pb.RegisterWebhookResponse:
    with as_caller(tenant):
        return await h.api.RegisterWebhook(
            pb.RegisterWebhookRequest(url=url, event_types=[HALTED], description="ops"), context()
        )


async def dead_letter(
    h: Harness, tenant: str, webhook_id: str, *, dlq_seq: int | None = None
) -> DeadLetterRow:
    """A failed delivery of a TradingStateChanged, as the delivery worker stores it."""
    envelope = new_envelope(
        risk_events.TradingStateChanged(reason="kill switch"),
        tenant_id=tenant,
        correlation_id="corr-1",
        producer="risk",
    )
    now = datetime.now(UTC)
    letter = DeadLetterRow(
        dead_letter_id=str(uuid7()),
        webhook_id=webhook_id,
        delivery_id=str(uuid7()),
        url=PUBLIC_URL,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        attempts=6,
        last_error="HTTP 503",
        last_http_status=503,
        first_attempt_at=now,
        last_attempt_at=now,
        dead_lettered_at=now,
        envelope=envelope.SerializeToString(),
        dlq_seq=dlq_seq,
    )
    assert await h.store.add_dead_letter(tenant, letter)
    if dlq_seq is not None:
        h.dlq.entries.add(dlq_seq)
    return letter


def context() -> Context:
    """A fresh recorded call context, typed as the servicer's."""
    return servicer_context()


def violations(error: ServiceError | AbortedCall) -> dict[str, str]:
    """The BadRequest field violations of an INVALID_ARGUMENT: field -> reason."""
    assert isinstance(error, ServiceError)
    found: dict[str, str] = {}
    for detail in error.status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.reason for v in bad.field_violations})
    return found


async def test_a_registered_webhook_is_listed_with_its_sealed_secret(notification: Harness) -> None:
    h = notification
    registered = await register(h, "tenant-a")
    hook = registered.webhook
    assert (hook.url, list(hook.event_types), hook.description) == (PUBLIC_URL, [HALTED], "ops")
    assert registered.signing_secret.startswith(hook.secret_prefix)
    stored = await h.store.get_webhook("tenant-a", hook.webhook_id)
    assert stored is not None
    assert h.box.open(hook.webhook_id, stored.secret_sealed) == registered.signing_secret
    with as_caller("tenant-a"):
        listed = await h.api.ListWebhooks(pb.ListWebhooksRequest(), context())
    assert list(listed.webhooks) == [hook]
    assert listed.next_page_token == ""


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://10.1.2.3/hook", "WEBHOOK_URL_PRIVATE_ADDRESS"),
        ("ftp://93.184.215.14/hook", "WEBHOOK_URL_SCHEME"),
        ("https://user:pw@93.184.215.14/hook", "WEBHOOK_URL_CREDENTIALS"),
    ],
)
async def test_a_refused_target_is_invalid_argument_and_stores_nothing(
    notification: Harness, url: str, reason: str
) -> None:
    h = notification
    with as_caller("tenant-a"):
        error = await expect_error(
            h.api.RegisterWebhook(pb.RegisterWebhookRequest(url=url), context()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    assert violations(error) == {"url": reason}
    assert await h.store.list_webhooks("tenant-a", 10, None) == []


async def test_an_event_type_notification_does_not_deliver_is_invalid_argument(notification: Harness) -> None:
    h = notification
    request = pb.RegisterWebhookRequest(url=PUBLIC_URL, event_types=["trading.marketdata.v1.Tick"])
    with as_caller("tenant-a"):
        error = await expect_error(
            h.api.RegisterWebhook(request, context()), grpc.StatusCode.INVALID_ARGUMENT
        )
    assert violations(error) == {"event_types[0]": "webhook.event_type_unknown"}
    assert await h.store.list_webhooks("tenant-a", 10, None) == []


async def test_webhooks_page_newest_first_and_a_foreign_token_is_refused(notification: Harness) -> None:
    h = notification
    ids = [(await register(h, "tenant-a")).webhook.webhook_id for _ in range(3)]
    with as_caller("tenant-a"):
        first = await h.api.ListWebhooks(pb.ListWebhooksRequest(page_size=2), context())
        second = await h.api.ListWebhooks(
            pb.ListWebhooksRequest(page_size=2, page_token=first.next_page_token), context()
        )
        assert [w.webhook_id for w in [*first.webhooks, *second.webhooks]] == ids[::-1]
        assert second.next_page_token == ""
        await expect_error(
            h.api.ListWebhooks(pb.ListWebhooksRequest(page_token="garbage"), context()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        # A dead-letter listing's token for another webhook filter is not this listing's.
        await expect_error(
            h.api.ListDeadLetters(
                pb.ListDeadLettersRequest(webhook_id=ids[0], page_token=first.next_page_token),
                context(),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )


async def test_another_tenant_never_sees_or_touches_a_tenants_webhooks(notification: Harness) -> None:
    h = notification
    hook = (await register(h, "tenant-a")).webhook
    letter = await dead_letter(h, "tenant-a", hook.webhook_id, dlq_seq=11)
    with as_caller("tenant-b"):
        ctx = context()
        assert list((await h.api.ListWebhooks(pb.ListWebhooksRequest(), ctx)).webhooks) == []
        assert list((await h.api.ListDeadLetters(pb.ListDeadLettersRequest(), ctx)).dead_letters) == []
        await expect_error(
            h.api.DeleteWebhook(pb.DeleteWebhookRequest(webhook_id=hook.webhook_id), ctx),
            grpc.StatusCode.NOT_FOUND,
        )
        await expect_error(
            h.api.RedriveDeadLetter(pb.RedriveDeadLetterRequest(dead_letter_id=letter.dead_letter_id), ctx),
            grpc.StatusCode.NOT_FOUND,
        )
    assert await h.store.get_webhook("tenant-a", hook.webhook_id) is not None
    assert await h.store.list_dead_letters("tenant-a", 10, None, None) == [letter]
    assert h.dlq.entries == {11} and h.jobs.jobs == []


async def test_deleting_a_webhook_drops_its_dead_letters_and_their_dlq_entries(notification: Harness) -> None:
    h = notification
    hook = (await register(h, "tenant-a")).webhook
    other = (await register(h, "tenant-a")).webhook
    await dead_letter(h, "tenant-a", hook.webhook_id, dlq_seq=1)
    kept = await dead_letter(h, "tenant-a", other.webhook_id, dlq_seq=2)
    request = pb.DeleteWebhookRequest(webhook_id=hook.webhook_id)
    with as_caller("tenant-a"):
        await h.api.DeleteWebhook(request, context())
        listed = await h.api.ListDeadLetters(pb.ListDeadLettersRequest(), context())
        await expect_error(h.api.DeleteWebhook(request, context()), grpc.StatusCode.NOT_FOUND)
    assert [d.dead_letter_id for d in listed.dead_letters] == [kept.dead_letter_id]
    assert h.dlq.entries == {2}


async def test_a_dead_letter_is_redriven_once_as_a_new_job(notification: Harness) -> None:
    h = notification
    hook = (await register(h, "tenant-a")).webhook
    letter = await dead_letter(h, "tenant-a", hook.webhook_id, dlq_seq=5)
    request = pb.RedriveDeadLetterRequest(dead_letter_id=letter.dead_letter_id)
    with as_caller("tenant-a"):
        redriven = await h.api.RedriveDeadLetter(request, context())
        await expect_error(h.api.RedriveDeadLetter(request, context()), grpc.StatusCode.NOT_FOUND)
    [job] = h.jobs.jobs
    assert (job.tenant_id, job.webhook_id, job.dead_letter_id) == (
        "tenant-a",
        hook.webhook_id,
        letter.dead_letter_id,
    )
    assert (job.delivery_id, job.envelope) == (redriven.delivery_id, letter.envelope)
    assert await h.store.list_dead_letters("tenant-a", 10, None, None) == []
    assert h.dlq.entries == set()


class _UnreachableJobs(MemoryDeliveryJobs):
    """The job stream failing to take the publish (JetStream away)."""

    async def publish(self, envelope_bytes: bytes, headers: Mapping[str, str], **kwargs: str) -> str:
        raise TimeoutError("no JetStream answer")


async def test_a_redrive_whose_publish_fails_keeps_the_dead_letter(notification: Harness) -> None:
    h = notification
    hook = (await register(h, "tenant-a")).webhook
    letter = await dead_letter(h, "tenant-a", hook.webhook_id, dlq_seq=5)
    api = NotificationApi(
        h.store,
        h.box,
        WebhookSender(NotificationSettings()),
        _UnreachableJobs(),
        NatsClient(),
        dead_letter_entries=h.dlq,
    )
    with as_caller("tenant-a"), pytest.raises(TimeoutError):
        await api.RedriveDeadLetter(
            pb.RedriveDeadLetterRequest(dead_letter_id=letter.dead_letter_id), context()
        )
    assert await h.store.list_dead_letters("tenant-a", 10, None, None) == [letter]
    assert h.dlq.entries == {5}
