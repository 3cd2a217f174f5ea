"""Kafka topics of the platform, created idempotently from the registry."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from runtime.config import KafkaSettings
from runtime.contracts import EventRegistry
from runtime.messaging.kafka.security import client_security

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of a topic."""
    return topic + DLQ_SUFFIX


def platform_topics(registry: EventRegistry, *, prefix: str = "") -> list[str]:
    """Every event topic of the registry and its dead-letter topic."""
    topics = [prefix + t for t in registry.kafka_topics()]
    return sorted({*topics, *(dlq_topic(t) for t in topics)})


async def ensure_topics(
    settings: KafkaSettings,
    topics: Iterable[str],
    *,
    partitions: int | None = None,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.servers, client_id="trading-admin", **client_security(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(topics) - existing)
        if missing:
            count = partitions or settings.default_partitions
            try:
                await admin.create_topics(
                    [
                        NewTopic(name, num_partitions=count, replication_factor=replication_factor)
                        for name in missing
                    ]
                )
            except TopicAlreadyExistsError:
                # Another process created it between list and create: fine.
                log.debug("topics created concurrently: %s", missing)
            log.info("created kafka topics %s", missing)
        return missing
    finally:
        await admin.close()
