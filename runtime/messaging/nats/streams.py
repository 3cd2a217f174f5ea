"""JetStream streams of the platform, derived from the event registry.

Which events go through JetStream: those published on NATS only (no Kafka
topic), unless their route says ``nats_core`` (a batch form of events that
are on Kafka one by one: marketdata's TickBatch). NATS is their one
carrier, so it must keep them. Events that also go to Kafka (ticks, orders,
fills) have Kafka as their durable, replayable record and use core NATS for
the low-latency fan-out copy, which keeps the hot path free of JetStream's
store-and-ack round trip. A publisher can override this
per event type (`NatsPublisher(jetstream_event_types=...)`).

One stream per domain (the subject's first token) holds that domain's durable
subjects; the `DLQ` stream holds dead letters under `dlq.<consumer>`.
"""

from __future__ import annotations

import logging
import string
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from trading.common.v1 import options_pb2

from runtime.contracts import EventRegistry

log = logging.getLogger(__name__)

DLQ_STREAM = "DLQ"
DLQ_SUBJECT_PREFIX = "dlq."
DAY_S = 86_400.0


def subject_filter(template: str, prefix: str = "") -> str:
    """The wildcard subject matching every subject of a template:
    "execution.orders.{tenant}.{order_id}" -> "execution.orders.*.*"."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if field is not None:
            parts.append("*")
    return prefix + "".join(parts)


def uses_jetstream(route: options_pb2.EventRoute) -> bool:
    """Default durability rule (see the module doc)."""
    return bool(route.nats_subject) and not route.kafka_topic and not route.nats_core


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream the platform needs."""

    name: str
    subjects: tuple[str, ...]
    description: str = ""
    max_age_s: float = 7 * DAY_S
    # JetStream drops a second publish with the same Nats-Msg-Id (the event
    # id) within this window: producer retries do not duplicate events.
    duplicate_window_s: float = 120.0

    def config(self, replicas: int = 1) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description or None,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age_s,
            duplicate_window=self.duplicate_window_s,
            num_replicas=replicas,
        )


def dlq_stream_spec(*, stream_prefix: str = "", subject_prefix: str = "") -> StreamSpec:
    """The dead-letter stream: `<subject_prefix>dlq.<consumer>` subjects."""
    return StreamSpec(
        name=stream_prefix + DLQ_STREAM,
        subjects=(f"{subject_prefix}{DLQ_SUBJECT_PREFIX}>",),
        description="Dead-lettered messages of NATS consumers, by consumer.",
        max_age_s=14 * DAY_S,
    )


def platform_streams(
    registry: EventRegistry, *, stream_prefix: str = "", subject_prefix: str = ""
) -> list[StreamSpec]:
    """Streams for every durable NATS event of the registry, plus the DLQ.
    The prefixes namespace everything (tests, several environments on one server)."""
    by_domain: dict[str, set[str]] = defaultdict(set)
    for event_type in registry.event_types():
        route = registry.route(event_type)
        if uses_jetstream(route):
            domain = route.nats_subject.split(".", 1)[0]
            by_domain[domain].add(subject_filter(route.nats_subject, subject_prefix))
    specs = [
        StreamSpec(
            name=f"{stream_prefix}{domain.upper()}",
            subjects=tuple(sorted(subjects)),
            description=f"Durable {domain} events.",
        )
        for domain, subjects in sorted(by_domain.items())
    ]
    specs.append(dlq_stream_spec(stream_prefix=stream_prefix, subject_prefix=subject_prefix))
    return specs


async def ensure_streams(
    js: JetStreamContext, specs: Iterable[StreamSpec], *, replicas: int = 1, update: bool = True
) -> None:
    """Create missing streams, update changed ones; re-running changes nothing.
    With ``update=False`` (a principal that may create a stream it needs but
    not change it: runtime.security.nats_permissions) a stream that exists
    with another config is left as it is."""
    for spec in specs:
        config = spec.config(replicas)
        try:
            # Creating with an identical config succeeds: the idempotent case.
            await js.add_stream(config)
        except BadRequestError:
            if not update:
                log.info("JetStream stream %s exists with another config; its owner updates it", spec.name)
                continue
            # Exists with another config: bring it to the declared one.
            await js.update_stream(config)
            log.info("updated JetStream stream %s", spec.name)
