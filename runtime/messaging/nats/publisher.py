"""NATS publisher: envelopes to the subject their event type's template names
(prefixed, if configured). Durable event types go through JetStream with
`Nats-Msg-Id` = event id (server-side de-duplication); the others use core
NATS publish: fire-and-forget fan-out, no round trip."""

from __future__ import annotations

import asyncio
import re
import string
import time
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType

import nats.errors
from google.protobuf import message as pb_message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from trading.common.v1 import event_pb2

from runtime.messaging.base import Delivery, NotRoutedError, Registry, Transport
from runtime.messaging.envelope import unpack
from runtime.messaging.headers import NATS_MSG_ID, envelope_headers
from runtime.messaging.nats.streams import uses_jetstream
from runtime.messaging.nats.telemetry import TRANSPORT as _NATS
from runtime.messaging.telemetry import MessagingMetrics, default_metrics, message_trace, publish_span

# Tokens of a publishable subject: no wildcards, no whitespace, no empty tokens.
_SUBJECT = re.compile(r"[^.*>\s]+(\.[^.*>\s]+)*")


class NatsPublisher:
    """Publishes envelopes on a connection the caller owns."""

    def __init__(
        self,
        nc: NatsClient,
        registry: Registry,
        *,
        subject_prefix: str = "",
        jetstream_event_types: Collection[str] | None = None,
        js_timeout_s: float = 5.0,
        metrics: MessagingMetrics | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=js_timeout_s)
        self._registry = registry
        self._prefix = subject_prefix
        self._jetstream_types = (
            frozenset(jetstream_event_types) if jetstream_event_types is not None else None
        )
        self._metrics = metrics or default_metrics()
        # Per event type: (template, needs payload fields, durable).
        self._routes: dict[str, tuple[str, bool, bool]] = {}

    @property
    def client(self) -> NatsClient:
        """The connection this publisher writes to (dead-letter readers use it)."""
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        return self._js

    async def start(self) -> None:
        """Nothing to start: the connection is injected."""

    async def close(self) -> None:
        """Flush core publishes still buffered in the client."""
        if self._nc.is_connected:
            await self._nc.flush()

    async def ping(self, timeout_s: int = 2) -> bool:
        """True when the server answers a round trip (readiness probes)."""
        if not self._nc.is_connected:
            return False
        try:
            await self._nc.flush(timeout=timeout_s)
        except (nats.errors.Error, TimeoutError):
            return False
        return True

    async def __aenter__(self) -> NatsPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _route(self, event_type: str) -> tuple[str, bool, bool]:
        cached = self._routes.get(event_type)
        if cached is None:
            route = self._registry.route(event_type)
            template = route.nats_subject
            if not template:
                raise NotRoutedError(f"{event_type} has no nats_subject")
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            durable = (
                event_type in self._jetstream_types
                if self._jetstream_types is not None
                else uses_jetstream(route)
            )
            cached = self._routes[event_type] = (template, bool(fields - {"tenant"}), durable)
        return cached

    def is_durable(self, event_type: str) -> bool:
        """True when this event type is published through JetStream."""
        return self._route(event_type)[2]

    def destination_of(
        self, envelope: event_pb2.EventEnvelope, payload: pb_message.Message | None = None
    ) -> str:
        """The concrete subject an envelope is published to (prefix included)."""
        _, needs_payload, _ = self._route(envelope.event_type)
        if payload is None and needs_payload:
            payload = unpack(envelope, self._registry)
        subject = self._prefix + self._registry.nats_subject(
            envelope.event_type, envelope.tenant_id, payload if payload is not None else envelope
        )
        if not _SUBJECT.fullmatch(subject):
            raise ValueError(f"cannot publish {envelope.event_type} on invalid subject {subject!r}")
        return subject

    async def publish(
        self,
        envelope: event_pb2.EventEnvelope,
        *,
        payload: pb_message.Message | None = None,
        durable: bool | None = None,
    ) -> None:
        """Publish one envelope. JetStream publishes wait for the stream's ack;
        core publishes return once buffered. `durable` overrides the default."""
        template, _, default_durable = self._route(envelope.event_type)
        subject = self.destination_of(envelope, payload)
        headers = envelope_headers(envelope)
        data = envelope.SerializeToString()
        start = time.perf_counter()
        try:
            with publish_span(_NATS, template, envelope, headers):
                if default_durable if durable is None else durable:
                    headers[NATS_MSG_ID] = envelope.event_id
                    await self._js.publish(subject, data, headers=headers)
                else:
                    await self._nc.publish(subject, data, headers=headers)
        except Exception:
            self._metrics.publish_failed(_NATS, template)
            raise
        self._metrics.published(_NATS, envelope.event_type, time.perf_counter() - start, template)

    async def publish_many(
        self, events: Sequence[tuple[event_pb2.EventEnvelope, pb_message.Message | None]]
    ) -> None:
        """Publish a batch under one span whose trace context every message
        carries (the same shape as KafkaPublisher.publish_many). Core messages are
        buffered and flushed by the client; JetStream ones are acked together."""
        if not events:
            return
        start = time.perf_counter()
        first, _ = events[0]
        trace: dict[str, str] = {}  # the batch span's context, for messages without an origin
        templates: list[str] = []
        try:
            with publish_span(_NATS, f"batch of {len(events)}", first, trace, [e for e, _ in events]):
                acks = []
                for envelope, payload in events:
                    template, _, durable = self._route(envelope.event_type)
                    templates.append(template)
                    headers = envelope_headers(envelope) | message_trace(envelope, trace)
                    subject = self.destination_of(envelope, payload)
                    data = envelope.SerializeToString()
                    if durable:
                        headers[NATS_MSG_ID] = envelope.event_id
                        acks.append(self._js.publish(subject, data, headers=headers))
                    else:
                        await self._nc.publish(subject, data, headers=headers)
                if acks:
                    await asyncio.gather(*acks)
        except Exception:
            for template in set(templates):
                self._metrics.publish_failed(_NATS, template, templates.count(template))
            raise
        per_event = (time.perf_counter() - start) / len(events)
        for (envelope, _), template in zip(events, templates, strict=True):
            self._metrics.published(_NATS, envelope.event_type, per_event, template)

    async def publish_raw(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        stream: str | None = None,
    ) -> Delivery:
        """Publish bytes as they are (dead-lettering, re-drive, tests): through
        JetStream when `stream` is given (waits for its ack), else core NATS
        (flushed). Returns where the message landed (stream sequence 0 on core)."""
        if stream:
            ack = await self._js.publish(subject, data, stream=stream, headers=dict(headers or {}))
            return Delivery(Transport.NATS, subject, -1, ack.seq, ack.stream)
        await self._nc.publish(subject, data, headers=dict(headers or {}))
        await self._nc.flush()
        return Delivery(Transport.NATS, subject)
