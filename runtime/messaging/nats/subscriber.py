"""NATS subscribers: `NatsSubscriber` on core NATS, `JetStreamSubscriber` on
a JetStream durable consumer. Both take the shape of
`runtime.messaging.kafka.KafkaSubscriber`: subjects or event types, a
handler, a retry policy and a publisher for dead letters.

`NatsSubscriber`: core subscriptions (optionally in a queue group) for
low-latency fan-out. Nothing is redelivered, so failures are retried in
process before dead-lettering. `follow` changes the subjects at run time.

`JetStreamSubscriber`: a durable pull consumer. Messages are acked after the
handler succeeded; a failing handler's message is nak'ed with a backoff delay
(the server redelivers it), and after `retry.max_attempts` deliveries it is
dead-lettered and terminated. Unacked messages of a crashed consumer come
back after `ack_wait_s`.

Dead letters go to the JetStream stream `DLQ`, subject `dlq.<name>`, through
`dead_letters` (a publisher on the subscriber's connection unless given).

A durable consumer reports to the health monitor (runtime.health) as
"nats:<name>": each fetch, empty ones included, is progress while the
connection is up; fetch errors and a lost connection are failures. Core
subscriptions have no loop to watch: the service's readiness already turns
NOT_SERVING when its NATS connection is down (runtime.resources).

Live subscriptions that need no durability and no dead letters (a streaming
RPC's, a matcher's quotes) are `runtime.messaging.nats.live`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self, TypedDict, Unpack

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
)
from runtime.messaging.consuming import attempt, decode, reason_of, retried
from runtime.messaging.deadletter import dead_letter_headers
from runtime.messaging.envelope import EnvelopeError
from runtime.messaging.nats.publisher import NatsPublisher
from runtime.messaging.nats.streams import DLQ_STREAM, DLQ_SUBJECT_PREFIX, subject_filter
from runtime.messaging.nats.telemetry import TRANSPORT as _NATS
from runtime.messaging.nats.telemetry import consume_span, core_delivery, record_lag, stream_delivery
from runtime.messaging.telemetry import MessagingMetrics, default_metrics, mark_failed

log = logging.getLogger(__name__)


def subscribed_subjects(
    registry: Registry, subjects: Iterable[str], event_types: Iterable[str], prefix: str
) -> list[str]:
    """The subjects of `subjects` and of `event_types` (their wildcard filters), prefixed."""
    wanted = [prefix + s for s in subjects]
    for event_type in event_types:
        template = registry.route(event_type).nats_subject
        if not template:
            raise ValueError(f"{event_type} is not published on NATS")
        wanted.append(subject_filter(template, prefix))
    return sorted(set(wanted))


class NatsConsumerOptions(TypedDict, total=False):
    """The keyword arguments both NATS subscribers take alike, written once
    (their defaults are ``_NatsConsumer.__init__``'s): what to subscribe to
    (``subjects``, ``event_types``, ``subject_prefix``), the retry policy,
    the dead-letter path (``dead_letters``, ``dlq_stream``,
    ``dlq_subject_prefix``), the JetStream API timeout and the metrics."""

    subjects: Sequence[str]
    event_types: Sequence[str]
    subject_prefix: str
    retry: RetryPolicy | None
    dead_letters: NatsPublisher | None
    dlq_stream: str
    dlq_subject_prefix: str | None
    js_timeout_s: float
    metrics: MessagingMetrics | None


class _NatsConsumer(ABC):
    """What both NATS subscribers share: subjects, handler, retry policy,
    metrics and the dead-letter path."""

    def __init__(
        self,
        nc: NatsClient,
        registry: Registry,
        handler: Handler,
        *,
        name: str,
        subjects: Sequence[str] = (),
        event_types: Sequence[str] = (),
        subject_prefix: str = "",
        retry: RetryPolicy | None = None,
        dead_letters: NatsPublisher | None = None,
        dlq_stream: str = DLQ_STREAM,
        dlq_subject_prefix: str | None = None,
        js_timeout_s: float = 5.0,
        metrics: MessagingMetrics | None = None,
    ) -> None:
        if not name or any(c in name for c in ".*> \t"):
            raise ValueError(f"consumer name must be one subject token, got {name!r}")
        self._subjects = subscribed_subjects(registry, subjects, event_types, subject_prefix)
        self._types = frozenset(event_types) or None
        self._nc = nc
        self._registry = registry
        self._handler = handler
        self._name = name
        self._retry = retry or RetryPolicy()
        self._subject_prefix = subject_prefix
        self._js_timeout_s = js_timeout_s
        self._dlq = dead_letters or NatsPublisher(nc, registry, js_timeout_s=js_timeout_s)
        self._dlq_stream = dlq_stream
        prefix = dlq_subject_prefix if dlq_subject_prefix is not None else subject_prefix + DLQ_SUBJECT_PREFIX
        self._dlq_subject = prefix + name
        self._metrics = metrics or default_metrics()

    @property
    def name(self) -> str:
        return self._name

    @property
    def subjects(self) -> list[str]:
        """The subjects subscribed to."""
        return list(self._subjects)

    @property
    def dlq_subject(self) -> str:
        return self._dlq_subject

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

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
        await self._dlq.publish_raw(self._dlq_subject, data, headers=dlq_headers, stream=self._dlq_stream)
        self._metrics.dead_lettered(_NATS, self._name, reason.value)
        log.error(
            "dead-lettered %s from %s (%s, %d attempts): %s",
            headers.get(h.EVENT_ID, "?"), delivery.describe(), reason.value, attempts, error,
        )  # fmt: skip


class NatsSubscriber(_NatsConsumer):
    """Core NATS: subscribes to `subjects` (or the subjects of `event_types`),
    in queue group `queue` if given, and hands each event to `handler`.
    `name` names the consumer in metrics and its DLQ subject; it defaults to
    `queue`. The other options: :class:`NatsConsumerOptions`."""

    def __init__(
        self,
        nc: NatsClient,
        registry: Registry,
        handler: Handler,
        *,
        queue: str = "",
        name: str | None = None,
        **options: Unpack[NatsConsumerOptions],
    ) -> None:
        super().__init__(nc, registry, handler, name=name or queue, **options)
        self._queue = queue
        self._core: list[Subscription] = []
        self._following = asyncio.Lock()

    async def start(self) -> None:
        """Subscribe to the subjects given at construction (at least one).
        Returns once the server has the subscriptions, so what is published
        afterwards is delivered."""
        if self._core:
            return
        if not self._subjects:
            raise ValueError("subscribe to at least one subject or event type (or use follow())")
        for subject in self._subjects:
            self._core.append(await self._nc.subscribe(subject, queue=self._queue, cb=self._on_message))
        await self._nc.flush()

    async def stop(self) -> None:
        core, self._core = self._core, []
        for sub in core:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def follow(self, subjects: Iterable[str]) -> None:
        """Make this subscriber's subscriptions exactly `subjects`
        (``subject_prefix`` is prepended): subscribe to the new ones,
        unsubscribe from the ones no longer wanted, keep the others (no
        message of a kept subject is lost). Usable instead of `start` for an
        interest that changes at run time (an empty set is allowed); `stop`
        ends them all. Returns once the server has the new subscriptions, so
        what is published afterwards is delivered."""
        wanted = {self._subject_prefix + s for s in subjects}
        async with self._following:
            current = {sub.subject: sub for sub in self._core}
            added = sorted(wanted - current.keys())
            for subject in added:
                self._core.append(await self._nc.subscribe(subject, queue=self._queue, cb=self._on_message))
            for subject, sub in current.items():
                if subject not in wanted:
                    self._core.remove(sub)
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()
            self._subjects = sorted(wanted)
            if added:
                await self._nc.flush()

    async def _on_message(self, msg: Msg) -> None:
        delivery = core_delivery(msg)
        headers = msg.headers or {}
        with consume_span(msg, self._name) as span:
            try:
                envelope, payload = decode(msg.data, self._registry)
            except EnvelopeError as exc:
                reason = reason_of(exc)
                mark_failed(span, reason.value, exc)
                await self._dead_letter_core(msg.data, headers, delivery, reason, exc, 0)
                return
            if self._types is not None and envelope.event_type not in self._types:
                return
            error = await retried(
                self._handler,
                Event(envelope, payload, headers, delivery),
                retry=self._retry,
                transport=_NATS,
                consumer=self._name,
                metrics=self._metrics,
            )
            if error is None:
                return
            mark_failed(span, DeadLetterReason.HANDLER_FAILED.value, error)
            await self._dead_letter_core(
                msg.data, headers, delivery, DeadLetterReason.HANDLER_FAILED, error, self._retry.max_attempts
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


class JetStreamSubscriber(_NatsConsumer):
    """A JetStream durable pull consumer `durable` on `stream` (found by
    subject when not given) of `subjects` (or the subjects of `event_types`),
    handing each event to `handler`. `name` names the consumer in metrics,
    health and its DLQ subject; it defaults to `durable`. The other options:
    :class:`NatsConsumerOptions`."""

    def __init__(
        self,
        nc: NatsClient,
        registry: Registry,
        handler: Handler,
        *,
        durable: str,
        stream: str | None = None,
        name: str | None = None,
        ack_wait_s: float = 30.0,
        batch: int = 64,
        max_ack_pending: int = 1000,
        health: HealthMonitor | None = None,
        **options: Unpack[NatsConsumerOptions],
    ) -> None:
        super().__init__(nc, registry, handler, name=name or durable, **options)
        if not self._subjects:
            raise ValueError("subscribe to at least one subject or event type")
        self._js: JetStreamContext = nc.jetstream(timeout=self._js_timeout_s)
        self._durable = durable
        self._stream = stream
        self._ack_wait_s = ack_wait_s
        self._batch = batch
        self._max_ack_pending = max_ack_pending
        self._monitor = health or default_monitor()
        self._health: ComponentHealth | None = None
        self._task: asyncio.Task[None] | None = None
        self._pull: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        if self._task is not None:
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
                await self._process(msg)
            if messages:
                record_lag(self._metrics, self._name, messages[-1])

    async def _process(self, msg: Msg) -> None:
        delivery = stream_delivery(msg)
        headers = msg.headers or {}
        deliveries = msg.metadata.num_delivered
        with consume_span(msg, self._name) as span:
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
