"""The FeaturesService servicer and its tick consumer on the in-memory
adapters: a tick (alone or in a TickBatch) becomes a published vector that GetFeatures answers, from
this replica's memory or from the shared store; a symbol without a vector is
NOT_FOUND or UNAVAILABLE as the instrument universe says. Market data has no
tenant: every caller sees the same vectors."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.rpc import error_details_pb2
from trading.common.v1 import decimal_pb2
from trading.features.v1 import events_pb2 as features_events
from trading.features.v1 import features_service_pb2 as pb
from trading.marketdata.v1 import events_pb2 as marketdata_events

from runtime.errors import ServiceError
from runtime.messaging import Delivery, Event, Transport, new_envelope
from services.features.adapters.memory import MemoryEvents, MemoryInstrumentUniverse, MemoryVectorStore
from services.features.api import FeaturesApi
from services.features.consumer import FeatureProcessor
from services.features.domain import BatchFeatureEngine
from services.marketdata.domain import tick_batches
from tests.support.servicers import as_caller, expect_error, servicer_context

D = decimal_pb2.Decimal
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Replica:
    """One features process: its engine and processor, the shared store and universe."""

    def __init__(
        self, vectors: MemoryVectorStore, universe: MemoryInstrumentUniverse, *, publishes: bool = True
    ):
        self.events = MemoryEvents()
        self.processor = FeatureProcessor(
            BatchFeatureEngine(),
            nats=self.events,
            kafka=self.events,
            vectors=vectors,
            publishes=lambda symbol: publishes,
        )
        self.api = FeaturesApi(self.processor, vectors, universe)

    async def get(self, symbol: str) -> pb.GetFeaturesResponse:
        with as_caller("tenant-a", scopes=["market:read"]):
            return await self.api.GetFeatures(pb.GetFeaturesRequest(symbol=symbol), servicer_context())


@pytest.fixture
def vectors() -> MemoryVectorStore:
    return MemoryVectorStore()


@pytest.fixture
def universe() -> MemoryInstrumentUniverse:
    return MemoryInstrumentUniverse(["BTC-USD", "ETH-USD"])


def tick(symbol: str, sequence: int, bid: str, ask: str) -> Event:
    payload = marketdata_events.Tick(
        symbol=symbol,
        bid_price=D(value=bid),
        ask_price=D(value=ask),
        bid_size=D(value="2"),
        ask_size=D(value="1"),
        sequence=sequence,
    )
    payload.exchange_time.FromDatetime(T0)
    envelope = new_envelope(payload, tenant_id="", correlation_id=f"c-{sequence}", producer="marketdata")
    return Event(envelope, payload, {}, Delivery(Transport.NATS, f"marketdata.ticks.{symbol}", 0, sequence))


async def test_a_tick_is_published_and_answered_from_memory(
    vectors: MemoryVectorStore, universe: MemoryInstrumentUniverse
) -> None:
    replica = Replica(vectors, universe)
    first = tick("BTC-USD", 1, "99", "101")
    await replica.processor.handle(first)
    await replica.processor.handle(tick("BTC-USD", 2, "101", "103"))
    response = await replica.get("BTC-USD")
    assert (response.vector.symbol, response.vector.tick_sequence) == ("BTC-USD", 2)
    assert (response.vector.mid_price.value, response.vector.spread.value) == ("102", "2")
    assert response.vector.tick_count == 2 and not response.vector.warmed_up
    # Each vector went out twice (live and replay copies), caused by its tick.
    envelopes = [e for e, _ in replica.events.published]
    assert len(envelopes) == 4
    assert envelopes[0] is envelopes[1] and envelopes[0].causation_id == first.envelope.event_id
    assert isinstance(replica.events.published[0][1], features_events.FeatureVectorComputed)


def batch_event(*ticks: Event) -> Event:
    """The TickBatch marketdata publishes for these ticks (one partition of them)."""
    batches = tick_batches((t.envelope.event_id, t.payload) for t in ticks)  # type: ignore[misc]
    assert len(batches) == 1
    envelope = new_envelope(batches[0], tenant_id="", correlation_id="", producer="marketdata")
    return Event(envelope, batches[0], {}, Delivery(Transport.NATS, "marketdata.tickbatches.1", 0, 1))


def vector_of(payload: object) -> pb.FeatureVector:
    assert isinstance(payload, features_events.FeatureVectorComputed)
    return payload.vector


async def test_a_batch_of_ticks_becomes_one_vector_per_tick_each_caused_by_its_tick(
    vectors: MemoryVectorStore, universe: MemoryInstrumentUniverse
) -> None:
    replica, one_by_one = Replica(vectors, universe), Replica(MemoryVectorStore(), universe)
    ticks = [tick("BTC-USD", i, str(99 + i), str(101 + i)) for i in range(1, 6)]
    ticks.insert(3, tick("BTC-USD", 2, "1", "2"))  # out of order: no vector
    await replica.processor.handle(batch_event(*ticks))
    for t in ticks:
        await one_by_one.processor.handle(t)
    # The live copies (NATS), then the same envelopes for Kafka.
    half = len(replica.events.published) // 2
    live, replay = replica.events.published[:half], replica.events.published[half:]
    assert [e for e, _ in replay] == [e for e, _ in live]
    assert [e.causation_id for e, _ in live] == [t.envelope.event_id for t in ticks if t is not ticks[3]]
    # Nothing correlates a batch: each vector is correlated by its tick's event id.
    assert [e.correlation_id for e, _ in live] == [e.causation_id for e, _ in live]
    # The same vectors as tick by tick (but the time they were computed at).
    batched = [vector_of(p) for _, p in live]
    alone = [vector_of(p) for _, p in one_by_one.events.published[::2]]
    for v in (*batched, *alone):
        v.ClearField("computed_at")
    assert batched == alone
    assert (await replica.get("BTC-USD")).vector.tick_sequence == 5


async def test_an_out_of_order_tick_changes_nothing(
    vectors: MemoryVectorStore, universe: MemoryInstrumentUniverse
) -> None:
    replica = Replica(vectors, universe)
    await replica.processor.handle(tick("BTC-USD", 5, "99", "101"))
    await replica.processor.handle(tick("BTC-USD", 4, "10", "11"))
    assert len(replica.events.published) == 2
    assert (await replica.get("BTC-USD")).vector.tick_sequence == 5


async def test_another_replica_answers_from_the_shared_store_after_a_flush(
    vectors: MemoryVectorStore, universe: MemoryInstrumentUniverse
) -> None:
    publisher, other = Replica(vectors, universe), Replica(vectors, universe, publishes=False)
    await publisher.processor.handle(tick("ETH-USD", 1, "10", "12"))
    await expect_error(other.get("ETH-USD"), grpc.StatusCode.UNAVAILABLE)  # not saved yet
    await publisher.processor.flush()
    assert (await other.get("ETH-USD")).vector.mid_price.value == "11"


async def test_a_replica_not_owning_a_symbol_keeps_it_warm_but_does_not_publish(
    vectors: MemoryVectorStore, universe: MemoryInstrumentUniverse
) -> None:
    replica = Replica(vectors, universe, publishes=False)
    await replica.processor.handle(tick("BTC-USD", 1, "99", "101"))
    assert replica.events.published == []
    state = replica.processor._engine.state("BTC-USD")
    assert state is not None and state.tick_count == 1


def reason_and_retry(error: object) -> tuple[str, float | None]:
    """The ErrorInfo reason and the RetryInfo delay (s) of a refused call."""
    assert isinstance(error, ServiceError)
    reason, retry = "", None
    for detail in error.status.details:
        info, delay = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(delay):
            retry = delay.retry_delay.ToTimedelta().total_seconds()
    return reason, retry


async def test_an_unlisted_symbol_is_not_found(
    vectors: MemoryVectorStore, universe: MemoryInstrumentUniverse
) -> None:
    error = await expect_error(Replica(vectors, universe).get("DOGE-USD"), grpc.StatusCode.NOT_FOUND)
    assert reason_and_retry(error) == ("INSTRUMENT_NOT_FOUND", None)


async def test_a_listed_symbol_without_a_tick_is_unavailable_for_now(
    vectors: MemoryVectorStore, universe: MemoryInstrumentUniverse
) -> None:
    error = await expect_error(Replica(vectors, universe).get("ETH-USD"), grpc.StatusCode.UNAVAILABLE)
    assert "no tick seen for ETH-USD yet" in str(error)
    assert reason_and_retry(error) == ("FEATURES_NOT_AVAILABLE", 1.0)


async def test_before_the_universe_is_published_every_symbol_is_unavailable(
    vectors: MemoryVectorStore,
) -> None:
    replica = Replica(vectors, MemoryInstrumentUniverse())
    error = await expect_error(replica.get("DOGE-USD"), grpc.StatusCode.UNAVAILABLE)
    assert "instrument universe not known yet" in str(error)
