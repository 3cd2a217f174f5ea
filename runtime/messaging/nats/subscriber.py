"""NATS subscriber.

With `durable`: a JetStream durable pull consumer. Messages are acked after
the handler succeeded; a failing handler's message is nak'ed with a backoff
delay (the server redelivers it), and after `retry.max_attempts` deliveries
it is dead-lettered and terminated. Unacked messages of a crashed consumer
come back after `ack_wait_s`.

Without `durable`: a core NATS subscription (optionally in a queue group) for
low-latency fan-out. Nothing is redelivered, so failures are retried in
process before dead-lettering.

Dead letters go to the JetStream stream `DLQ`, subject `dlq.<name>`.

A durable consumer reports to the health monitor (runtime.health) as
"nats:<name>": each fetch, empty ones included, is progress while the
connection is up; fetch errors and a lost connection are failures. Core
subscriptions have no loop to watch: the service's readiness already turns
NOT_SERVING when its NATS connection is down (runtime.resources).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from types import TracebackType

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError

from runtime.health import ComponentHealth, HealthMonitor, default_monitor
from runtime.messaging import headers as h
from runtime.messaging.base import (
    DeadLetterReason,
    Delivery,
    Event,
    Handler,
    Registry,
    RetryPolicy,
    Transport,
)
from runtime.messaging.consuming import attempt, decode, reason_of
from runtime.messaging.deadletter import dead_letter_headers
from runtime.messaging.envelope import EnvelopeError
from runtime.messaging.nats.streams import DLQ_STREAM, DLQ_SUBJECT_PREFIX, subject_filter
from runtime.messaging.telemetry import MessagingMetrics, default_metrics, mark_failed, process_span

log = logging.getLogger(__name__)

_NATS = Transport.NATS.value


class NatsSubscriber:
    """Consumes `subjects` (or the subjects of `event_types`) and hands each
    event to `handler`. `name` names the consumer in metrics and its DLQ
    subject; it defaults to `durable` or `queue`."""

    def __init__(
        self,
        nc: NatsClient,
        registry: Registry,
        handler: Handler,
        *,
        subjects: Sequence[str] = (),
        event_types: Sequence[str] = (),
        durable: str | None = None,
        stream: str | None = None,
        queue: str = "",
        name: str | None = None,
        retry: RetryPolicy | None = None,
        subject_prefix: str = "",
        dlq_stream: str = DLQ_STREAM,
        dlq_subject_prefix: str | None = None,
        ack_wait_s: float = 30.0,
        batch: int = 64,
        max_ack_pending: int = 1000,
        js_timeout_s: float = 5.0,
        metrics: MessagingMetrics | None = None,
        health: HealthMonitor | None = None,
    ) -> None:
        wanted = [subject_prefix + s for s in subjects]
        for event_type in event_types:
            template = registry.route(event_type).nats_subject
            if not template:
                raise ValueError(f"{event_type} is not published on NATS")
            wanted.append(subject_filter(template, subject_prefix))
        if not wanted:
            raise ValueError("subscribe to at least one subject or event type")
        consumer_name = name or durable or queue
        if not consumer_name or any(c in consumer_name for c in ".*> \t"):
            raise ValueError(f"consumer name must be one subject token, got {consumer_name!r}")
        self._subjects = sorted(set(wanted))
        self._types = frozenset(event_types) or None
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=js_timeout_s)
        self._registry = registry
        self._handler = handler
        self._durable = durable
        self._stream = stream
        self._queue = queue
        self._name = consumer_name
        self._retry = retry or RetryPolicy()
        self._dlq_stream = dlq_stream
        prefix = dlq_subject_prefix if dlq_subject_prefix is not None else subject_prefix + DLQ_SUBJECT_PREFIX
        self._dlq_subject = prefix + consumer_name
        self._ack_wait_s = ack_wait_s
        self._batch = batch
        self._max_ack_pending = max_ack_pending
        self._metrics = metrics or default_metrics()
        self._monitor = health or default_monitor()
        self._health: ComponentHealth | None = None
        self._task: asyncio.Task[None] | None = None
        self._pull: JetStreamContext.PullSubscription | None = None
        self._core: list[Subscription] = []
        self._subject_prefix = subject_prefix
        self._following = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dlq_subject(self) -> str:
        return self._dlq_subject

    async def start(self) -> None:
        if self._task is not None or self._core:
            return
        if self._durable is None:
            for subject in self._subjects:
                self._core.append(await self._nc.subscribe(subject, queue=self._queue, cb=self._on_core))
            return
        stream = self._stream or await self._js.find_stream_name_by_subject(self._subjects[0])
        self._stream = stream
        config = ConsumerConfig(
            durable_name=self._durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait_s,
            # Unlimited: this subscriber counts deliveries and dead-letters.
            max_deliver=-1,
            max_ack_pending=self._max_ack_pending,
        )
        if len(self._subjects) == 1:
            config.filter_subject = self._subjects[0]
        else:
            config.filter_subjects = list(self._subjects)
        try:
            await self._js.add_consumer(stream, config)
        except BadRequestError as exc:
            # Exists with another config (e.g. other timings): keep using it.
            log.warning("durable %s on %s exists with another config: %s", self._durable, stream, exc)
        self._pull = await self._js.pull_subscribe_bind(durable=self._durable, stream=stream)
        self._health = self._monitor.register(f"nats:{self._name}")
        self._task = asyncio.create_task(self._pull_loop(), name=f"nats-subscriber-{self._name}")

    async def stop(self) -> None:
        """Stop without acking anything in flight: JetStream redelivers it
        after ack_wait (to this durable's next subscriber)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        health, self._health = self._health, None
        if health is not None:
            health.close()
        pull, self._pull = self._pull, None
        if pull is not None:
            with contextlib.suppress(nats.errors.Error):
                await pull.unsubscribe()
        core, self._core = self._core, []
        for sub in core:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def __aenter__(self) -> NatsSubscriber:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def follow(self, subjects: Iterable[str]) -> None:
        """Core mode only: make this subscriber's subscriptions exactly
        `subjects` (``subject_prefix`` is prepended): subscribe to the new
        ones, unsubscribe from the ones no longer wanted, keep the others
        (no message of a kept subject is lost). Usable instead of `start` for
        an interest that changes at run time (an empty set is allowed);
        `stop` ends them all. Returns once the server has the new
        subscriptions, so what is published afterwards is delivered."""
        if self._durable is not None:
            raise ValueError("follow() is for core NATS subscribers, not durable consumers")
        wanted = {self._subject_prefix + s for s in subjects}
        async with self._following:
            current = {sub.subject: sub for sub in self._core}
            added = sorted(wanted - current.keys())
            for subject in added:
                self._core.append(await self._nc.subscribe(subject, queue=self._queue, cb=self._on_core))
            for subject, sub in current.items():
                if subject not in wanted:
                    self._core.remove(sub)
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()
            self._subjects = sorted(wanted)
            if added:
                await self._nc.flush()

    @property
    def subjects(self) -> list[str]:
        """The subjects subscribed to (core mode: what `start` or `follow` set)."""
        return list(self._subjects)

    # ----------------------------------------------------------------- JetStream

    async def _pull_loop(self) -> None:
        assert self._pull is not None and self._health is not None
        pull, health = self._pull, self._health
        while True:
            try:
                messages = await pull.fetch(self._batch, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                # nats-py raises the builtin TimeoutError too (batch fetches
                # whose deadline ran out): not an error, and it must not end the loop.
                # Nothing to read is healthy, unless the connection is down
                # (fetches then time out as well).
                if self._nc.is_connected:
                    health.progress()
                else:
                    health.failing("NATS connection lost")
                continue
            except nats.errors.Error as exc:
                log.warning("fetch failed for %s: %s", self._name, exc)
                health.failing(f"fetch: {exc!r}")
                await asyncio.sleep(0.5)
                continue
            health.progress()
            for msg in messages:
                await self._process_jetstream(msg)
            if messages:
                meta = messages[-1].metadata
                self._metrics.lag(_NATS, self._name, meta.stream, meta.num_pending)

    async def _process_jetstream(self, msg: Msg) -> None:
        meta = msg.metadata
        delivery = Delivery(Transport.NATS, msg.subject, -1, meta.sequence.stream, meta.stream)
        headers = msg.headers or {}
        deliveries = meta.num_delivered
        with process_span(_NATS, msg.subject, self._name, headers, headers.get(h.EVENT_ID, "")) as span:
            try:
                envelope, payload = decode(msg.data, self._registry)
            except EnvelopeError as exc:
                reason = reason_of(exc)
                mark_failed(span, reason.value, exc)
                await self._finish_dead(msg, headers, delivery, reason, exc, attempts=0)
                return
            if self._types is not None and envelope.event_type not in self._types:
                await msg.ack()
                return
            event = Event(envelope, payload, headers, delivery, attempt=deliveries)
            error = await attempt(
                self._handler, event, transport=_NATS, consumer=self._name, metrics=self._metrics
            )
            if error is None:
                await msg.ack()
                return
            log.warning(
                "handler %s failed on %s (delivery %d/%d): %r",
                self._name, delivery.describe(), deliveries, self._retry.max_attempts, error,
            )  # fmt: skip
            if deliveries < self._retry.max_attempts:
                mark_failed(span, "retry", error)
                await msg.nak(delay=self._retry.backoff(deliveries))
                return
            mark_failed(span, DeadLetterReason.HANDLER_FAILED.value, error)
            await self._finish_dead(
                msg, headers, delivery, DeadLetterReason.HANDLER_FAILED, error, deliveries
            )

    async def _finish_dead(
        self,
        msg: Msg,
        headers: dict[str, str],
        delivery: Delivery,
        reason: DeadLetterReason,
        error: BaseException,
        attempts: int,
    ) -> None:
        """Dead-letter, then terminate the delivery. If the DLQ cannot take it,
        nak instead: the message comes back rather than being lost."""
        try:
            await self._dead_letter(msg.data, headers, delivery, reason, error, attempts)
        except (TimeoutError, nats.errors.Error) as exc:
            log.error("dead-lettering %s failed, will retry: %s", delivery.describe(), exc)
            await msg.nak(delay=1.0)
            return
        await msg.term()

    # ----------------------------------------------------------------- core NATS

    async def _on_core(self, msg: Msg) -> None:
        delivery = Delivery(Transport.NATS, msg.subject)
        headers = msg.headers or {}
        with process_span(_NATS, msg.subject, self._name, headers, headers.get(h.EVENT_ID, "")) as span:
            try:
                envelope, payload = decode(msg.data, self._registry)
            except EnvelopeError as exc:
                reason = reason_of(exc)
                mark_failed(span, reason.value, exc)
                await self._dead_letter_core(msg.data, headers, delivery, reason, exc, 0)
                return
            if self._types is not None and envelope.event_type not in self._types:
                return
            event = Event(envelope, payload, headers, delivery)
            max_attempts = self._retry.max_attempts
            for number in range(1, max_attempts + 1):
                if number > 1:
                    event = dataclasses.replace(event, attempt=number)
                error = await attempt(
                    self._handler, event, transport=_NATS, consumer=self._name, metrics=self._metrics
                )
                if error is None:
                    return
                if number < max_attempts:
                    await asyncio.sleep(self._retry.backoff(number))
            assert error is not None  # the loop only ends here after a failed attempt
            mark_failed(span, DeadLetterReason.HANDLER_FAILED.value, error)
            await self._dead_letter_core(
                msg.data, headers, delivery, DeadLetterReason.HANDLER_FAILED, error, max_attempts
            )

    async def _dead_letter_core(
        self,
        data: bytes,
        headers: dict[str, str],
        delivery: Delivery,
        reason: DeadLetterReason,
        error: BaseException,
        attempts: int,
    ) -> None:
        try:
            await self._dead_letter(data, headers, delivery, reason, error, attempts)
        except (TimeoutError, nats.errors.Error) as exc:
            # Core NATS has no redelivery: the message is lost; say so loudly.
            log.error("dead-lettering %s failed, message dropped: %s", delivery.describe(), exc)

    # ----------------------------------------------------------------- DLQ

    async def _dead_letter(
        self,
        data: bytes,
        headers: dict[str, str],
        delivery: Delivery,
        reason: DeadLetterReason,
        error: BaseException,
        attempts: int,
    ) -> None:
        """Publish the original bytes and headers plus x-dlq-* to the DLQ stream."""
        dlq_headers = dead_letter_headers(
            headers,
            reason=reason,
            error=error,
            attempts=attempts,
            source=delivery.describe(),
            consumer=self._name,
        )
        if delivery.stream:
            # One DLQ entry per stream message even if we crash between the
            # DLQ publish and the term and the message comes back.
            dlq_headers[h.NATS_MSG_ID] = f"{self._name}:{delivery.describe()}"
        else:
            dlq_headers.pop(h.NATS_MSG_ID, None)
        await self._js.publish(self._dlq_subject, data, stream=self._dlq_stream, headers=dlq_headers)
        self._metrics.dead_lettered(_NATS, self._name, reason.value)
        log.error(
            "dead-lettered %s from %s (%s, %d attempts): %s",
            headers.get(h.EVENT_ID, "?"), delivery.describe(), reason.value, attempts, error,
        )  # fmt: skip
