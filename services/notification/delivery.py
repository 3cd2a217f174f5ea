"""Webhook deliveries: from platform events to signed HTTP POSTs, with
retries and dead letters.

The path, durable at every step:

1. `FanOut.handle` is the handler of the event consumers (the JetStream
   durable on order updates, the Kafka group on risk and portfolio events).
   For each webhook of the event's tenant that wants the event type it
   publishes a delivery job to the JetStream stream `NOTIFICATION`, subject
   ``notification.webhooks.{tenant}.{webhook_id}``: the event envelope's bytes
   plus headers naming the delivery (`Nats-Msg-Id` = event id + webhook id,
   so a redelivered event does not make a second job). Then the event is acked.
2. `DeliveryWorker.handle` is the handler of the delivery workers (pull
   subscribers sharing the durable consumer `notification-webhooks`). It
   loads the webhook (a deleted one gets nothing), re-checks the target's
   addresses (DNS rebinding) and POSTs the signed envelope JSON, retrying with
   exponential backoff and jitter (tenacity) until a 2xx answer or the last
   attempt. The outcome is reported on Kafka: WebhookDeliveryFailed through
   notification's outbox, in the transaction that stores the dead letter
   (runtime/outbox.py; the shared relay publishes it); WebhookDelivered
   directly and best effort (nothing of ours changed: it reports the HTTP
   answer of a POST that already happened).
3. A delivery that failed every attempt becomes a dead letter twice over: a
   row in PostgreSQL (tenant-scoped; ListDeadLetters/RedriveDeadLetter) and
   an entry in the platform's NATS `DLQ` stream under
   ``dlq.notification-webhooks`` with the original bytes and headers plus the
   x-dlq-* ones (`tradingctl deadletters list|redrive` like every other
   consumer). Either redrive publishes the job again; the job carries the
   dead letter's id (`x-notification-dead-letter-id`), and the worker removes
   that row when it picks the job up, so the two views agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import nats.errors
from google.protobuf import json_format
from google.protobuf import message as pb_message
from nats.js.client import JetStreamContext
from prometheus_client import Counter, Histogram
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from trading.common.v1 import event_pb2
from trading.notification.v1 import events_pb2, types_pb2

from runtime.contracts import default_pool
from runtime.messaging import DeadLetterReason, Event, new_envelope, uuid7
from runtime.messaging import headers as h
from runtime.messaging.deadletter import dead_letter_headers, describe_error
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats.streams import DLQ_STREAM, DLQ_SUBJECT_PREFIX, StreamSpec
from runtime.outbox import KAFKA, OutboxRelay, outbox_row
from services.notification import domain, signing
from services.notification.ports import DeadLetterRow, DeliveryJobs, WebhookRow, WebhookStore
from services.notification.settings import NotificationSettings
from services.notification.targets import (
    ResolvedTarget,
    TargetRefusedError,
    parse_target,
    resolve_target,
)

log = logging.getLogger(__name__)

PRODUCER = "notification"
JOBS_STREAM = "NOTIFICATION"
JOBS_SUBJECT_PREFIX = "notification.webhooks."
WORKER_CONSUMER = "notification-webhooks"

# Job headers (none starts with x-dlq-, so they survive a dead letter's redrive).
HEADER_WEBHOOK_ID = "x-notification-webhook-id"
HEADER_DELIVERY_ID = "x-notification-delivery-id"
HEADER_DEAD_LETTER_ID = "x-notification-dead-letter-id"

USER_AGENT = "trading-platform-webhooks/1"
# The receiver's answer is not used: read at most this much of it for the error text.
_ERROR_BODY_CHARS = 200

DELIVERIES = Counter("notification_webhook_deliveries", "Webhook deliveries by outcome.", ["outcome"])
ATTEMPTS = Counter("notification_webhook_attempts", "Webhook HTTP attempts by result.", ["result"])
ATTEMPT_SECONDS = Histogram(
    "notification_webhook_attempt_seconds",
    "Duration of one webhook HTTP attempt.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def jobs_stream_spec() -> StreamSpec:
    """The JetStream stream of delivery jobs (kept 7 days, like the platform's)."""
    return StreamSpec(
        name=JOBS_STREAM,
        subjects=(JOBS_SUBJECT_PREFIX + ">",),
        description="Webhook delivery jobs of notification, one per (event, webhook).",
    )


def job_subject(tenant_id: str, webhook_id: str) -> str:
    return f"{JOBS_SUBJECT_PREFIX}{tenant_id}.{webhook_id}"


def is_subject_token(value: str) -> bool:
    return bool(value) and not any(c in value for c in ".*> \t\r\n")


def envelope_json(envelope: event_pb2.EventEnvelope) -> bytes:
    """The delivery body: the envelope's proto3 JSON, payload with its "@type"."""
    text = json_format.MessageToJson(envelope, indent=None, descriptor_pool=default_pool())
    return text.encode()


# ------------------------------------------------------------------------------------ HTTP


class AttemptFailedError(Exception):
    """One HTTP attempt did not get a 2xx answer (retried)."""

    def __init__(self, error: str, http_status: int = 0) -> None:
        super().__init__(error)
        self.error = error
        self.http_status = http_status


@dataclass
class Outcome:
    """What happened to one delivery."""

    attempts: int = 0
    http_status: int = 0
    error: str = ""
    delivered: bool = False
    first_attempt_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_attempt_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class WebhookSender:
    """POSTs signed bodies to webhook targets with tenacity retries."""

    def __init__(self, settings: NotificationSettings, client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        # No redirects (a 3xx could point anywhere, private addresses included),
        # no proxies from the environment, one timeout for the whole attempt.
        self._client = client or httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(settings.attempt_timeout_s),
            headers={"user-agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def resolve(self, url: str) -> ResolvedTarget:
        """Parse and resolve a stored target against the current policy."""
        target = parse_target(url, allow_http=self._settings.allow_insecure_http)
        return await resolve_target(target, allow_private=self._settings.allow_private_targets)

    async def _attempt(self, url: str, secret: str, message_id: str, body: bytes) -> int:
        # Resolved and checked on every attempt; the request then goes to the
        # checked address (Host header and TLS SNI keep the name).
        resolved = await self.resolve(url)
        target, address = resolved.target, resolved.addresses[0]
        headers = {
            "content-type": "application/json",
            "host": target.host_header,
            **signing.signed_headers(secret, message_id, int(time.time()), body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        start = time.perf_counter()
        try:
            # The contract's bound is on the whole answer, not per socket operation.
            async with (
                asyncio.timeout(self._settings.attempt_timeout_s),
                self._client.stream(
                    "POST", target.url_for(address), content=body, headers=headers, extensions=extensions
                ) as response,
            ):
                status = response.status_code
                # Only a little of the answer is read (for the error text): a
                # receiver cannot make the platform download a large body.
                excerpt = b""
                if not 200 <= status < 300:
                    async for chunk in response.aiter_raw():
                        excerpt += chunk
                        if len(excerpt) >= _ERROR_BODY_CHARS:
                            break
        except (TimeoutError, httpx.TimeoutException) as exc:
            ATTEMPTS.labels("timeout").inc()
            raise AttemptFailedError(f"timeout after {self._settings.attempt_timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            ATTEMPTS.labels("error").inc()
            raise AttemptFailedError(describe_error(exc)) from exc
        finally:
            ATTEMPT_SECONDS.observe(time.perf_counter() - start)
        if 200 <= status < 300:
            ATTEMPTS.labels("2xx").inc()
            return status
        ATTEMPTS.labels(f"{status // 100}xx").inc()
        text = " ".join(excerpt[:_ERROR_BODY_CHARS].decode("utf-8", "replace").split())
        raise AttemptFailedError(f"HTTP {status}" + (f": {text}" if text else ""), status)

    async def deliver(self, url: str, secret: str, message_id: str, body: bytes) -> Outcome:
        """Attempt until a 2xx answer or `delivery_attempts` attempts; a target
        the policy refuses (now) is not retried."""
        s = self._settings
        outcome = Outcome()

        def note(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            log.info("webhook attempt %d to %s failed: %s", state.attempt_number, url, error)

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(AttemptFailedError),
                stop=stop_after_attempt(s.delivery_attempts),
                wait=wait_exponential_jitter(
                    multiplier=s.backoff_initial_s, max=s.backoff_max_s, jitter=s.backoff_jitter_s
                ),
                before_sleep=note,
                reraise=True,
            ):
                with attempt:
                    outcome.attempts = attempt.retry_state.attempt_number
                    outcome.last_attempt_at = datetime.now(UTC)
                    outcome.http_status = await self._attempt(url, secret, message_id, body)
                    outcome.delivered = True
        except AttemptFailedError as exc:
            outcome.error, outcome.http_status = exc.error, exc.http_status
        except TargetRefusedError as exc:
            outcome.error, outcome.http_status = f"target refused: {exc.description}", 0
        return outcome


# ------------------------------------------------------------------------------------ jobs


# How long fanned-out event ids are remembered (the jobs stream keeps jobs 7 days).
FANNED_OUT_RETENTION = timedelta(days=7)
# Every this many fanned-out events, the current tenant's old records are pruned.
_PRUNE_EVERY = 256


class FanOut:
    """Turns one platform event into one delivery job per interested webhook.

    Idempotent by event id: the jobs' ids (event id + webhook id) let JetStream
    drop a copy published within its duplicate window, and the event id is
    recorded once its jobs are out (``notification.fanned_out``), so a copy
    redelivered later (a producer's outbox relay publishing again after a
    crash) makes no second delivery either."""

    def __init__(self, store: WebhookStore, jobs: DeliveryJobs) -> None:
        self._store = store
        self._jobs = jobs
        self._recorded = 0

    async def handle(self, event: Event) -> None:
        envelope = event.envelope
        tenant = envelope.tenant_id
        if envelope.event_type not in domain.DELIVERED_EVENT_TYPES:
            return
        if not is_subject_token(tenant):
            log.warning("event %s has no usable tenant id %r: no webhooks", envelope.event_id, tenant)
            return
        occurred_at = (
            envelope.occurred_at.ToDatetime(tzinfo=UTC) if envelope.HasField("occurred_at") else None
        )
        webhooks = [
            w
            for w in await self._store.webhooks_for(tenant, envelope.event_type, event_id=envelope.event_id)
            if domain.after_registration(w.created_at, occurred_at)
        ]
        if not webhooks:
            return
        data = envelope.SerializeToString()
        for webhook in webhooks:
            await self._jobs.publish(
                data,
                event.headers,
                tenant_id=tenant,
                webhook_id=webhook.webhook_id,
                msg_id=f"{envelope.event_id}:{webhook.webhook_id}",
            )
        self._recorded += 1
        # Now and then, the tenant's records past the retention go (same transaction, no extra trip).
        prune = self._recorded % _PRUNE_EVERY == 0
        await self._store.fanned_out(
            tenant,
            envelope.event_id,
            prune_before=datetime.now(UTC) - FANNED_OUT_RETENTION if prune else None,
        )


# ------------------------------------------------------------------------------------ worker


class DeliveryWorker:
    """Delivers jobs (see the module doc); the handler of the delivery workers."""

    def __init__(
        self,
        store: WebhookStore,
        box: signing.SecretBox,
        sender: WebhookSender,
        js: JetStreamContext,
        kafka: KafkaPublisher | None,
        *,
        consumer: str = WORKER_CONSUMER,
        dlq_stream: str = DLQ_STREAM,
        relay: OutboxRelay | None = None,
    ) -> None:
        self._store = store
        self._box = box
        self._sender = sender
        self._js = js
        self._kafka = kafka
        self._relay = relay
        self._consumer = consumer
        self._dlq_stream = dlq_stream
        self._dlq_subject = DLQ_SUBJECT_PREFIX + consumer

    async def handle(self, event: Event) -> None:
        envelope = event.envelope
        tenant = envelope.tenant_id
        webhook_id = event.headers.get(HEADER_WEBHOOK_ID, "")
        delivery_id = event.headers.get(HEADER_DELIVERY_ID, "") or str(uuid7())
        if not tenant or not webhook_id:
            log.warning("delivery job %s without tenant or webhook id: dropped", event.delivery.describe())
            return
        redriven = event.headers.get(HEADER_DEAD_LETTER_ID, "")
        if redriven and await self._store.take_dead_letter(tenant, redriven) is not None:
            # The dead letter was still there, so this is a `tradingctl
            # deadletters redrive` (RedriveDeadLetter removes it and names a
            # new delivery itself): the redrive is a new delivery all the same.
            delivery_id = str(uuid7())
        webhook = await self._store.get_webhook(tenant, webhook_id)
        if webhook is None:
            DELIVERIES.labels("webhook_gone").inc()
            return  # deleted: no delivery starts after DeleteWebhook
        secret = self._box.open(webhook.webhook_id, webhook.secret_sealed)
        body = envelope_json(envelope)
        outcome = await self._sender.deliver(webhook.url, secret, envelope.event_id, body)
        if outcome.delivered:
            DELIVERIES.labels("delivered").inc()
            await self._report(envelope, self._delivered(webhook, delivery_id, envelope, outcome))
            return
        DELIVERIES.labels("dead_lettered").inc()
        await self._dead_letter(event, webhook, delivery_id, outcome)

    def _delivered(
        self, webhook: WebhookRow, delivery_id: str, envelope: event_pb2.EventEnvelope, outcome: Outcome
    ) -> events_pb2.WebhookDelivered:
        delivered = events_pb2.WebhookDelivered(
            webhook_id=webhook.webhook_id,
            delivery_id=delivery_id,
            event_id=envelope.event_id,
            event_type=envelope.event_type,
            attempts=outcome.attempts,
            http_status=outcome.http_status,
        )
        delivered.delivered_at.FromDatetime(outcome.last_attempt_at)
        if envelope.HasField("occurred_at"):
            latency = outcome.last_attempt_at - envelope.occurred_at.ToDatetime(tzinfo=UTC)
            delivered.latency.FromTimedelta(max(latency, timedelta(0)))
        return delivered

    async def _dead_letter(
        self, event: Event, webhook: WebhookRow, delivery_id: str, outcome: Outcome
    ) -> None:
        envelope = event.envelope
        tenant = envelope.tenant_id
        letter = DeadLetterRow(
            dead_letter_id=str(uuid7()),
            webhook_id=webhook.webhook_id,
            delivery_id=delivery_id,
            url=webhook.url,
            event_id=envelope.event_id,
            event_type=envelope.event_type,
            attempts=outcome.attempts,
            last_error=describe_error(outcome.error),
            last_http_status=outcome.http_status,
            first_attempt_at=outcome.first_attempt_at,
            last_attempt_at=outcome.last_attempt_at,
            dead_lettered_at=datetime.now(UTC),
            envelope=envelope.SerializeToString(),
        )
        failed = events_pb2.WebhookDeliveryFailed(
            webhook_id=webhook.webhook_id, delivery_id=delivery_id, dead_letter=dead_letter_message(letter)
        )
        announced = new_envelope(
            failed,
            tenant_id=tenant,
            correlation_id=envelope.correlation_id,
            causation_id=envelope.event_id,
            producer=PRODUCER,
        )
        if not await self._store.add_dead_letter(
            tenant, letter, events=[outbox_row(announced, KAFKA, partition_key=webhook.webhook_id)]
        ):
            return  # the webhook was deleted during the attempts
        if self._relay is not None:
            self._relay.wake()
        dlq_seq = await self._to_dlq_stream(event, letter)
        if dlq_seq is not None:
            await self._store.set_dlq_seq(tenant, letter.dead_letter_id, dlq_seq)
        log.warning(
            "webhook %s: event %s dead-lettered as %s after %d attempts: %s",
            webhook.webhook_id, envelope.event_id, letter.dead_letter_id, letter.attempts, letter.last_error,
        )  # fmt: skip

    async def _to_dlq_stream(self, event: Event, letter: DeadLetterRow) -> int | None:
        """The platform DLQ entry (what `tradingctl deadletters` lists); its
        source is the job, so the CLI's redrive publishes the job again."""
        source = event.delivery.describe()
        original = dict(event.headers)
        original[HEADER_DEAD_LETTER_ID] = letter.dead_letter_id
        headers = dead_letter_headers(
            original,
            reason=DeadLetterReason.HANDLER_FAILED,
            error=letter.last_error,
            attempts=letter.attempts,
            source=source,
            consumer=self._consumer,
        )
        headers[h.NATS_MSG_ID] = f"{self._consumer}:{source}:{letter.dead_letter_id}"
        try:
            ack = await self._js.publish(
                self._dlq_subject,
                event.envelope.SerializeToString(),
                stream=self._dlq_stream,
                headers=headers,
            )
        except (TimeoutError, nats.errors.Error) as exc:
            # PostgreSQL has it (the RPCs see it); only the CLI view misses it.
            log.error("dead letter %s not written to the DLQ stream: %r", letter.dead_letter_id, exc)
            return None
        return int(ack.seq)

    async def _report(self, cause: event_pb2.EventEnvelope, payload: pb_message.Message) -> None:
        """Best effort: the outcome event is information, the delivery already happened."""
        if self._kafka is None:
            return
        envelope = new_envelope(
            payload,
            tenant_id=cause.tenant_id,
            correlation_id=cause.correlation_id,
            causation_id=cause.event_id,
            producer=PRODUCER,
        )
        try:
            async with asyncio.timeout(5.0):
                await self._kafka.publish(envelope, payload=payload)
        except Exception as exc:
            log.warning("%s of event %s not published: %r", envelope.event_type, cause.event_id, exc)


def dead_letter_message(letter: DeadLetterRow) -> types_pb2.DeadLetter:
    """The contract's DeadLetter of a stored one."""
    message = types_pb2.DeadLetter(
        dead_letter_id=letter.dead_letter_id,
        webhook_id=letter.webhook_id,
        url=letter.url,
        event_id=letter.event_id,
        event_type=letter.event_type,
        attempts=letter.attempts,
        last_error=letter.last_error,
        last_http_status=letter.last_http_status,
    )
    message.first_attempt_at.FromDatetime(letter.first_attempt_at)
    message.last_attempt_at.FromDatetime(letter.last_attempt_at)
    message.dead_lettered_at.FromDatetime(letter.dead_lettered_at)
    return message
