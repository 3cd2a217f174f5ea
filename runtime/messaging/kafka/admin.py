"""Kafka topics of the platform, created idempotently from the registry."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

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
    replication_factor: int | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created.

    Idempotent and safe to race: every service calls it at start-up, and a
    topic another process created meanwhile ("already exists") is fine. Any
    other error the broker reports for a topic is raised (KafkaError).
    Replication factor and min.insync.replicas come from `settings` (with
    acks=all, a write is acknowledged once that many replicas have it)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.servers, client_id="trading-admin", **client_security(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(topics) - existing)
        if not missing:
            return []
        count = partitions or settings.default_partitions
        replicas = replication_factor or settings.replication_factor
        # Only set where it matters (a replicated cluster): the default is 1.
        configs = (
            {"min.insync.replicas": str(settings.min_insync_replicas)}
            if settings.min_insync_replicas > 1
            else {}
        )
        response = await admin.create_topics(
            [
                NewTopic(name, num_partitions=count, replication_factor=replicas, topic_configs=configs)
                for name in missing
            ]
        )
        created: list[str] = []
        for entry in getattr(response, "topic_errors", ()):
            name, code = entry[0], entry[1]
            if code == 0:
                created.append(name)
            elif code == TopicAlreadyExistsError.errno:
                # Another process created it between list and create: fine.
                log.debug("topic %s created concurrently", name)
            else:
                error: type[KafkaError] = for_code(code)
                raise error(f"creating topic {name}: {entry[2] if len(entry) > 2 else ''}")
        if created:
            log.info("created kafka topics %s", created)
        return created
    finally:
        await admin.close()
