"""Features' ports in process memory, with the observable behaviour of the
real ones: the latest vectors and the instrument universe (passing the suites
of ``tests/suites/features_ports.py``), and a publisher recording what it
publishes, in order (where NATS and Kafka would carry it). No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2
from trading.features.v1 import features_service_pb2 as pb

from services.features.ports import Item, Listing


class MemoryVectorStore:
    """Vectors kept serialized, as Redis keeps them: a reader never shares a
    message with the writer."""

    def __init__(self) -> None:
        self._vectors: dict[str, bytes] = {}

    async def latest(self, symbol: str) -> pb.FeatureVector | None:
        stored = self._vectors.get(symbol)
        return pb.FeatureVector.FromString(stored) if stored is not None else None

    async def save(self, vectors: Mapping[str, pb.FeatureVector]) -> None:
        self._vectors.update({s: v.SerializeToString() for s, v in vectors.items()})


class MemoryInstrumentUniverse:
    """Unpublished until :meth:`publish` lists the symbols."""

    def __init__(self, symbols: Iterable[str] | None = None) -> None:
        self._symbols = None if symbols is None else set(symbols)

    def publish(self, symbols: Iterable[str]) -> None:
        """Add symbols, as marketdata does at its start."""
        self._symbols = (self._symbols or set()) | set(symbols)

    async def listing(self, symbol: str) -> Listing:
        if not self._symbols:  # an empty set is no key in Redis
            return Listing.UNPUBLISHED
        return Listing.LISTED if symbol in self._symbols else Listing.UNLISTED


class MemoryEvents:
    """Both publishing ports (:class:`LiveEvents`, :class:`ReplayEvents`):
    keeps every envelope with its payload, in order."""

    def __init__(self) -> None:
        self.published: list[tuple[event_pb2.EventEnvelope, pb_message.Message | None]] = []

    async def publish_many(self, events: Sequence[Item]) -> None:
        self.published.extend(events)

    async def submit_many(self, events: Sequence[Item]) -> None:
        self.published.extend(events)
