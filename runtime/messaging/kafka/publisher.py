"""Kafka publisher: envelopes to the topic their event type is routed to,
keyed by the payload's partition-key field so one aggregate stays in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2

from runtime.config import KafkaSettings
from runtime.messaging.base import Delivery, NotRoutedError, Registry, Transport
from runtime.messaging.envelope import unpack
from runtime.messaging.headers import envelope_headers, to_kafka
from runtime.messaging.kafka.security import client_security
from runtime.messaging.kafka.telemetry import TRANSPORT as _KAFKA
from runtime.messaging.kafka.telemetry import destination_label
from runtime.messaging.telemetry import MessagingMetrics, default_metrics, message_trace, publish_span


class KafkaPublisher:
    """Publishes envelopes with acks=all. `topic_prefix` namespaces topics
    (several environments or test runs on one cluster). Idempotent production follows
    `settings.enable_idempotence` (off for tansu, which lacks InitProducerId);
    without it, consumers deduplicate on the event id."""

    def __init__(
        self,
        settings: KafkaSettings,
        registry: Registry,
        *,
        topic_prefix: str = "",
        client_id: str = "trading",
        # A millisecond of linger batches bursts without hurting latency much.
        linger_ms: int = 1,
        # lz4 is cheap on CPU; aiokafka needs `cramjam` for it.
        compression_type: str | None = "lz4",
        request_timeout_ms: int = 10_000,
        metrics: MessagingMetrics | None = None,
        # Bytes per partition in one produce request (aiokafka's default 16 KiB). The
        # producer has one request in flight per broker, so a high-volume
        # stream (ticks, feature vectors) needs larger batches to get past
        # one request's worth of records per broker round trip.
        max_batch_size: int = 16_384,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._prefix = topic_prefix
        self._metrics = metrics or default_metrics()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.servers,
            client_id=client_id,
            acks="all",
            linger_ms=linger_ms,
            compression_type=compression_type,
            enable_idempotence=settings.enable_idempotence,
            request_timeout_ms=request_timeout_ms,
            max_batch_size=max_batch_size,
            **client_security(settings),
        )
        self._started = False

    @property
    def settings(self) -> KafkaSettings:
        """The cluster this publisher writes to (dead-letter readers use it)."""
        return self._settings

    async def start(self) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def ping(self) -> bool:
        """True when the brokers answer a metadata request (readiness probes)."""
        if not self._started:
            return False
        try:
            await self._producer.client.fetch_all_metadata()
        except Exception:
            return False
        return True

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def publish(
        self, envelope: event_pb2.EventEnvelope, *, payload: pb_message.Message | None = None
    ) -> None:
        """Publish to the event type's topic and wait for the broker's ack.
        Pass `payload` when you have it, to skip unpacking it for the key."""
        topic, key = self._route(envelope, payload)
        destination = destination_label(topic, self._prefix)
        headers = envelope_headers(envelope)
        start = time.perf_counter()
        try:
            with publish_span(_KAFKA, topic, envelope, headers):
                await self._send(topic, envelope.SerializeToString(), key, to_kafka(headers), None)
        except Exception:
            self._metrics.publish_failed(_KAFKA, destination)
            raise
        self._metrics.published(_KAFKA, envelope.event_type, time.perf_counter() - start, destination)

    async def publish_many(
        self, events: Sequence[tuple[event_pb2.EventEnvelope, pb_message.Message | None]]
    ) -> None:
        """Publish a batch: every record is handed to the producer first, then
        all acks are awaited together, under one span whose trace context all
        records carry. Much cheaper per event than `publish` in a loop (one task
        and one span per batch, not per event); same routing and headers."""
        if not events:
            return
        start = time.perf_counter()
        first, _ = events[0]
        trace: dict[str, str] = {}  # the batch span's context, for messages without an origin
        destinations: list[str] = []
        try:
            with publish_span(_KAFKA, f"batch of {len(events)}", first, trace, [e for e, _ in events]):
                acks = []
                for envelope, payload in events:
                    topic, key = self._route(envelope, payload)
                    destinations.append(destination_label(topic, self._prefix))
                    headers = envelope_headers(envelope) | message_trace(envelope, trace)
                    acks.append(
                        await self._producer.send(
                            topic, value=envelope.SerializeToString(), key=key, headers=to_kafka(headers)
                        )
                    )
                await asyncio.gather(*acks)
        except Exception:
            for destination in set(destinations):
                self._metrics.publish_failed(_KAFKA, destination, destinations.count(destination))
            raise
        per_event = (time.perf_counter() - start) / len(events)
        for (envelope, _), destination in zip(events, destinations, strict=True):
            self._metrics.published(_KAFKA, envelope.event_type, per_event, destination)

    def destination_of(
        self, envelope: event_pb2.EventEnvelope, payload: pb_message.Message | None = None
    ) -> str:
        """The topic an envelope is published to (prefix included)."""
        return self._route(envelope, payload)[0]

    def _route(
        self, envelope: event_pb2.EventEnvelope, payload: pb_message.Message | None
    ) -> tuple[str, bytes | None]:
        """Topic and key of one event, from the registry."""
        event_type = envelope.event_type
        route = self._registry.route(event_type)
        if not route.kafka_topic:
            raise NotRoutedError(f"{event_type} has no kafka_topic")
        key: bytes | None = None
        if route.partition_key == "tenant":
            key = envelope.tenant_id.encode()
        elif route.partition_key:
            if payload is None:
                payload = unpack(envelope, self._registry)
            key = self._registry.partition_key(event_type, envelope.tenant_id, payload)
        return self._prefix + route.kafka_topic, key

    async def publish_raw(
        self,
        topic: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> Delivery:
        """Publish bytes as they are (dead-lettering, re-drive, tests) and wait
        for the broker's ack; returns where the record landed."""
        metadata = await self._send(topic, data, key, to_kafka(headers or {}), partition)
        return Delivery(Transport.KAFKA, metadata.topic, metadata.partition, metadata.offset)

    async def _send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> RecordMetadata:
        future = await self._producer.send(topic, value=value, key=key, headers=headers, partition=partition)
        metadata: RecordMetadata = await future
        return metadata
