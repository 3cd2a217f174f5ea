"""Dead letters on Kafka: list the entries of `<topic>.dlq` topics (all, or
one consumer's) and re-drive one (original bytes, key and headers back to the
source topic and partition). Same shape as `runtime.messaging.nats.deadletter`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from runtime.messaging import headers as h
from runtime.messaging.base import DeadLetter, Delivery
from runtime.messaging.deadletter import dead_letter_record
from runtime.messaging.headers import from_kafka
from runtime.messaging.kafka.admin import dlq_topic
from runtime.messaging.kafka.publisher import KafkaPublisher
from runtime.messaging.kafka.security import client_security


def parse_source(source: str) -> tuple[str, int, int]:
    """("topic", partition, offset) of an `x-dlq-source` value."""
    topic, partition, offset = source.rsplit("/", 2)
    return topic, int(partition), int(offset)


def parse_id(dlq_id: str) -> tuple[str, int, int]:
    """("dlq topic", partition, offset) of a Kafka DeadLetter id."""
    return parse_source(dlq_id)


class KafkaDeadLetters:
    """The dead letters of source `topics` (their `.dlq` topics), read with a
    group-less consumer (so reading never moves any group's offsets) on the
    publisher's cluster and re-driven through the publisher. Ids are
    "dlq-topic/partition/offset"."""

    def __init__(self, publisher: KafkaPublisher, *, topics: Sequence[str]) -> None:
        self._settings = publisher.settings
        self._publisher = publisher
        self._topics = list(topics)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._settings.servers,
            group_id=None,
            enable_auto_commit=False,
            client_id="trading-dlq-reader",
            **client_security(self._settings),
        )

    async def list(self, consumer: str | None = None, *, limit: int = 1000) -> list[DeadLetter]:
        """Dead letters (all, or only one consumer's), oldest first per partition."""
        reader = self._consumer()
        await reader.start()
        try:
            partitions: list[TopicPartition] = []
            await reader.topics()  # loads the cluster metadata partitions_for_topic reads
            for topic in self._topics:
                for p in sorted(reader.partitions_for_topic(dlq_topic(topic)) or ()):
                    partitions.append(TopicPartition(dlq_topic(topic), p))
            if not partitions:
                return []
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            ends = await reader.end_offsets(partitions)
            remaining = {tp for tp in partitions if ends[tp] > 0}
            found: list[DeadLetter] = []
            async with asyncio.timeout(30):
                while remaining:
                    batch = await reader.getmany(*remaining, timeout_ms=500)
                    for tp, records in batch.items():
                        for r in records:
                            if r.offset >= ends[tp]:
                                continue
                            letter = dead_letter_record(
                                f"{tp.topic}/{tp.partition}/{r.offset}",
                                r.value or b"",
                                from_kafka(r.headers),
                                r.key,
                            )
                            if consumer is None or letter.consumer == consumer:
                                found.append(letter)
                    if len(found) >= limit:
                        return found[:limit]
                    for tp in list(remaining):
                        if await reader.position(tp) >= ends[tp]:
                            remaining.discard(tp)
            return found
        finally:
            await reader.stop()

    async def get(self, dlq_id: str) -> DeadLetter:
        """One dead letter by id ("dlq-topic/partition/offset")."""
        topic, partition, offset = parse_id(dlq_id)
        tp = TopicPartition(topic, partition)
        reader = self._consumer()
        await reader.start()
        try:
            reader.assign([tp])
            reader.seek(tp, offset)
            async with asyncio.timeout(10):
                record = await reader.getone(tp)
            if record.offset != offset:
                raise LookupError(f"dead letter {dlq_id} no longer exists")
            return dead_letter_record(dlq_id, record.value or b"", from_kafka(record.headers), record.key)
        finally:
            await reader.stop()

    async def redrive(self, letter: DeadLetter | str) -> Delivery:
        """Publish the original bytes, key and headers to the source topic and
        partition again; returns where the new record landed. The DLQ entry
        stays (Kafka cannot delete single records)."""
        if isinstance(letter, str):
            letter = await self.get(letter)
        topic, partition, _ = parse_source(letter.source)
        return await self._publisher.publish_raw(
            topic, letter.value, headers=h.without_dlq(letter.headers), key=letter.key, partition=partition
        )
