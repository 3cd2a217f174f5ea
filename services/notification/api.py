"""gRPC API of the notification service (trading.notification.v1.NotificationService).

The tenant comes from the call's metadata, never from the request; another
tenant's webhooks and dead letters are invisible (NOT_FOUND), enforced by
the storage port underneath (services.notification.ports; row-level security
in PostgreSQL).

Subscribe relays the tenant's events live: core NATS subscriptions on the
tenant's own subjects (``execution.orders.{tenant}.*``,
``risk.events.{tenant}``, ``portfolio.positions.{tenant}``), so every replica
hears every event, and a stream only ever sees its tenant's subjects. The
events are tenant-wide (orders carry no user), so every user of the tenant
receives them; nothing is replayed. A client too slow to keep up has its
stream ended with ABORTED rather than silently missing notifications.
"""

from __future__ import annotations

import logging
import string
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from nats.aio.client import Client as NatsClient
from trading.notification.v1 import notification_service_pb2 as pb
from trading.notification.v1 import types_pb2

from runtime import paging
from runtime.context import require_tenant
from runtime.contracts import event_registry
from runtime.errors import FieldViolation, ServiceError, domain_error, invalid_argument, status
from runtime.messaging import decode_envelope, uuid7
from runtime.messaging import headers as h
from runtime.messaging.nats.live import FellBehindError, Overflow, live_subscription
from services.notification import domain, signing
from services.notification.delivery import dead_letter_message, is_subject_token
from services.notification.ports import (
    DeadLetterEntries,
    DeliveryJobs,
    TargetResolver,
    WebhookRow,
    WebhookStore,
)
from services.notification.targets import TargetRefusedError

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
DOMAIN = "trading.notification"


def tenant_subjects(tenant_id: str) -> list[str]:
    """Core NATS subjects carrying the delivered events of one tenant."""
    registry = event_registry()
    subjects: set[str] = set()
    for event_type in sorted(domain.DELIVERED_EVENT_TYPES):
        template = registry.route(event_type).nats_subject
        parts = []
        for literal, name, _, _ in string.Formatter().parse(template):
            parts.append(literal)
            if name is not None:
                parts.append(tenant_id if name == "tenant" else "*")
        subjects.add("".join(parts))
    return sorted(subjects)


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def webhook_message(row: WebhookRow) -> types_pb2.Webhook:
    return types_pb2.Webhook(
        webhook_id=row.webhook_id,
        url=row.url,
        event_types=list(row.event_types),
        description=row.description,
        secret_prefix=row.secret_prefix,
        created_at=_ts(row.created_at),
    )


def _not_found(kind: str, reason: str, ident: str) -> ServiceError:
    return ServiceError(
        domain_error(grpc.StatusCode.NOT_FOUND, reason, DOMAIN, f"no {kind} {ident}", {"id": ident})
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _cursor(token: str, fingerprint: str = "") -> str | None:
    """The last id of the previous page, from a token this server wrote for
    the same filter."""
    try:
        cursor = paging.decode_token(token)
    except paging.InvalidPageTokenError as exc:
        raise ServiceError(invalid_argument([FieldViolation("page_token", str(exc))])) from None
    if not cursor:
        return None
    last, filter_of = cursor.get("last"), cursor.get("f", "")
    if not isinstance(last, str) or filter_of != fingerprint or not _is_uuid(last):
        raise ServiceError(
            invalid_argument([FieldViolation("page_token", "not a token of this listing (filters changed?)")])
        )
    return last


class NotificationApi:
    """The NotificationService servicer."""

    def __init__(
        self,
        store: WebhookStore,
        box: signing.SecretBox,
        sender: TargetResolver,
        jobs: DeliveryJobs,
        nats_client: NatsClient,
        *,
        dead_letter_entries: DeadLetterEntries,
        stream_buffer: int = 1000,
    ) -> None:
        self._store = store
        self._box = box
        self._sender = sender
        self._jobs = jobs
        self._nats = nats_client
        self._dead_letter_entries = dead_letter_entries
        self._stream_buffer = stream_buffer
        self._registry = event_registry()
        self.active_streams = 0
        # The Kafka consumer of risk/portfolio events (tests wait for its assignment).
        self.events_subscriber: Any = None

    # ---- Subscribe

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        tenant = require_tenant()
        if not is_subject_token(tenant):
            raise ServiceError(
                invalid_argument([FieldViolation("", f"tenant id {tenant!r} cannot be streamed")])
            )
        kinds = frozenset(request.kinds)
        min_severity = int(request.min_severity)
        self.active_streams += 1
        try:
            async with live_subscription(
                self._nats,
                self._registry,
                tenant_subjects(tenant),
                name="notification-stream",
                buffer=self._stream_buffer,
                overflow=Overflow.END,
            ) as events:
                async for event in events:
                    if event.envelope.tenant_id != tenant:
                        continue  # the subject says this tenant; the envelope must agree
                    notification = domain.to_notification(event.envelope, event.payload)
                    if notification is not None and domain.wanted(notification, kinds, min_severity):
                        yield pb.SubscribeResponse(notification=notification)
        except FellBehindError:
            raise ServiceError(
                status(grpc.StatusCode.ABORTED, "the notification stream fell behind; reconnect")
            ) from None
        finally:
            self.active_streams -= 1

    # ---- webhooks

    async def RegisterWebhook(
        self, request: pb.RegisterWebhookRequest, context: Context
    ) -> pb.RegisterWebhookResponse:
        tenant = require_tenant()
        violations = [
            FieldViolation(
                f"event_types[{i}]",
                f"{name} is not an event type notification delivers "
                f"(one of: {', '.join(sorted(domain.DELIVERED_EVENT_TYPES))})",
                "webhook.event_type_unknown",
            )
            for i, name in enumerate(request.event_types)
            if name not in domain.DELIVERED_EVENT_TYPES
        ]
        try:
            await self._sender.resolve(request.url)
        except TargetRefusedError as exc:
            violations.insert(0, FieldViolation("url", exc.description, exc.reason))
        if violations:
            raise ServiceError(invalid_argument(violations))
        webhook_id = str(uuid7())
        secret = signing.new_secret()
        row = WebhookRow(
            webhook_id=webhook_id,
            url=request.url,
            event_types=tuple(request.event_types),
            description=request.description,
            secret_sealed=self._box.seal(webhook_id, secret),
            secret_prefix=secret[: signing.SHOWN_PREFIX_CHARS],
            created_at=datetime.now(UTC),
        )
        await self._store.create_webhook(tenant, row)
        log.info("webhook %s registered for tenant %s: %s", webhook_id, tenant, request.url)
        return pb.RegisterWebhookResponse(webhook=webhook_message(row), signing_secret=secret)

    async def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: Context
    ) -> pb.ListWebhooksResponse:
        tenant = require_tenant()
        size = paging.page_size(request.page_size)
        rows = await self._store.list_webhooks(tenant, size + 1, _cursor(request.page_token))
        page, more = rows[:size], len(rows) > size
        token = paging.encode_token({"last": page[-1].webhook_id}) if more else ""
        return pb.ListWebhooksResponse(webhooks=[webhook_message(r) for r in page], next_page_token=token)

    async def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: Context
    ) -> pb.DeleteWebhookResponse:
        tenant = require_tenant()
        dropped = await self._store.delete_webhook(tenant, request.webhook_id)
        if dropped is None:
            raise _not_found("webhook", "WEBHOOK_NOT_FOUND", request.webhook_id)
        for seq in dropped:
            await self._dead_letter_entries.delete(seq)
        log.info(
            "webhook %s of tenant %s deleted (%d dead letters dropped)",
            request.webhook_id,
            tenant,
            len(dropped),
        )
        return pb.DeleteWebhookResponse()

    # ---- dead letters

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Context
    ) -> pb.ListDeadLettersResponse:
        tenant = require_tenant()
        size = paging.page_size(request.page_size)
        webhook_id = request.webhook_id or None
        rows = await self._store.list_dead_letters(
            tenant, size + 1, _cursor(request.page_token, request.webhook_id), webhook_id
        )
        page, more = rows[:size], len(rows) > size
        token = (
            paging.encode_token({"last": page[-1].dead_letter_id, "f": request.webhook_id}) if more else ""
        )
        return pb.ListDeadLettersResponse(
            dead_letters=[dead_letter_message(r) for r in page], next_page_token=token
        )

    async def RedriveDeadLetter(
        self, request: pb.RedriveDeadLetterRequest, context: Context
    ) -> pb.RedriveDeadLetterResponse:
        tenant = require_tenant()
        async with self._store.taking_dead_letter(tenant, request.dead_letter_id) as letter:
            if letter is None:
                raise _not_found("dead letter", "DEAD_LETTER_NOT_FOUND", request.dead_letter_id)
            envelope = decode_envelope(letter.envelope)
            headers = h.envelope_headers(envelope)
            h.inject_trace(headers)
            # Published inside the transaction: if it fails, the dead letter stays.
            delivery_id = await self._jobs.publish(
                letter.envelope,
                headers,
                tenant_id=tenant,
                webhook_id=letter.webhook_id,
                msg_id=f"{envelope.event_id}:{letter.webhook_id}:redrive:{letter.dead_letter_id}",
                dead_letter_id=letter.dead_letter_id,
            )
        if letter.dlq_seq is not None:
            await self._dead_letter_entries.delete(letter.dlq_seq)
        log.info(
            "dead letter %s of tenant %s redriven as delivery %s", letter.dead_letter_id, tenant, delivery_id
        )
        return pb.RedriveDeadLetterResponse(delivery_id=delivery_id)
