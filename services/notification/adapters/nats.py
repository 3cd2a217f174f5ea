"""Notification's messaging ports on JetStream: delivery jobs published to the
NOTIFICATION stream, and the platform DLQ stream's entries."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import nats.errors
from nats.js.client import JetStreamContext

from runtime.messaging import headers as h
from runtime.messaging import uuid7
from runtime.messaging.nats.streams import DLQ_STREAM
from services.notification.delivery import (
    HEADER_DEAD_LETTER_ID,
    HEADER_DELIVERY_ID,
    HEADER_WEBHOOK_ID,
    JOBS_STREAM,
    job_subject,
)

log = logging.getLogger(__name__)


class JetStreamDeliveryJobs:
    """The DeliveryJobs port: jobs on the NOTIFICATION stream, subject
    ``notification.webhooks.{tenant}.{webhook_id}``, `msg_id` as ``Nats-Msg-Id``
    (JetStream drops a copy within its duplicate window)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def publish(
        self,
        envelope_bytes: bytes,
        headers: Mapping[str, str],
        *,
        tenant_id: str,
        webhook_id: str,
        msg_id: str,
        dead_letter_id: str = "",
    ) -> str:
        """Publish one job; returns its delivery id."""
        delivery_id = str(uuid7())
        job_headers = {k: v for k, v in h.without_dlq(headers).items() if not k.startswith("x-notification-")}
        job_headers[HEADER_WEBHOOK_ID] = webhook_id
        job_headers[HEADER_DELIVERY_ID] = delivery_id
        if dead_letter_id:
            job_headers[HEADER_DEAD_LETTER_ID] = dead_letter_id
        job_headers[h.NATS_MSG_ID] = msg_id
        await self._js.publish(
            job_subject(tenant_id, webhook_id), envelope_bytes, stream=JOBS_STREAM, headers=job_headers
        )
        return delivery_id


class JetStreamDeadLetterEntries:
    """The DeadLetterEntries port on the platform's DLQ stream."""

    def __init__(self, js: JetStreamContext, stream: str = DLQ_STREAM) -> None:
        self._js = js
        self._stream = stream

    async def delete(self, seq: int) -> None:
        try:
            await self._js.delete_msg(self._stream, seq)
        except (TimeoutError, nats.errors.Error) as exc:
            log.info("DLQ entry %d not deleted (already gone?): %r", seq, exc)
