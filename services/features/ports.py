"""What features' servicer and tick consumer depend on: the latest vectors
every replica shares (:class:`VectorStore`), marketdata's instrument universe
(:class:`InstrumentUniverse`), and where vectors are published
(:class:`LiveEvents` at once, :class:`ReplayEvents` off the tick's path).
Adapters: :mod:`services.features.adapters.redis` (the store and the
universe; the publishers are runtime's NatsPublisher and BackgroundPublisher)
and :mod:`services.features.adapters.memory`; the store and the universe pass
the suites in ``tests/suites/features_ports.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2
from trading.features.v1 import features_service_pb2 as pb


class VectorStore(Protocol):
    """The latest FeatureVector of each symbol, platform-wide (market data has
    no tenant): what another replica or a restarted process answers from."""

    async def latest(self, symbol: str) -> pb.FeatureVector | None:
        """The last vector saved for `symbol`; None when none was."""
        ...

    async def save(self, vectors: Mapping[str, pb.FeatureVector]) -> None:
        """Save each symbol's vector, replacing the one before (last write
        wins); raises when the store cannot be written (the caller retries)."""
        ...


class Listing(enum.Enum):
    """What marketdata's instrument universe says of a symbol."""

    UNPUBLISHED = "unpublished"  # marketdata has not published the universe yet
    LISTED = "listed"
    UNLISTED = "unlisted"


class InstrumentUniverse(Protocol):
    """The symbols marketdata lists (features has no instrument table)."""

    async def listing(self, symbol: str) -> Listing:
        """Whether `symbol` is listed, or that no universe is published yet."""
        ...


Item = tuple[event_pb2.EventEnvelope, pb_message.Message | None]


class LiveEvents(Protocol):
    """Publishes events at once (core NATS: the live copy)."""

    async def publish_many(self, events: Sequence[Item]) -> None:
        """Publish each event (with its payload when at hand), in order."""
        ...


class ReplayEvents(Protocol):
    """Queues an event for publishing in the background (Kafka: the replay
    copy); waits only while its queue is full, never raises a publish failure."""

    async def submit_many(self, events: Sequence[Item]) -> None:
        """Queue each event, in order."""
        ...
