"""features on real Redis, NATS and tansu: ticks published on NATS in
TickBatch events, as marketdata publishes them, become one
FeatureVectorComputed event per tick on NATS and Kafka, GetFeatures serves the
latest vector, and unknown or not-yet-ticked symbols get NOT_FOUND or
UNAVAILABLE. Unique symbols keep it apart from anything else on the servers."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import grpc
import protovalidate
import pytest
from aiokafka import AIOKafkaConsumer
from nats.aio.msg import Msg
from redis.asyncio import Redis
from trading.features.v1 import events_pb2 as features_events
from trading.features.v1 import features_service_pb2 as pb
from trading.features.v1 import features_service_pb2_grpc as pb_grpc
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.errors import error_details
from runtime.market_cache import INSTRUMENTS_KEY
from runtime.messaging import decode_envelope, new_envelope
from runtime.messaging.headers import from_kafka
from runtime.messaging.nats import NatsPublisher
from services.features.adapters.redis import vector_key
from services.features.domain import FeatureConfig
from services.features.main import make_spec
from services.features.settings import FeaturesSettings
from services.marketdata.domain import partition_of, tick_batches
from tests.support.nats import connect_harness
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

VECTOR_EVENT = "trading.features.v1.FeatureVectorComputed"
T0 = 1_717_425_000_000_000_000
TICKS = 40


def tenant_md() -> tuple[tuple[str, str], ...]:
    return user_md("features", "tenant-features")


def _tick(symbol: str, i: int) -> md_events.Tick:
    bid = Decimal("100") + Decimal(i % 7) / 10
    tick = md_events.Tick(symbol=symbol, sequence=i, source="test")
    tick.bid_price.value = str(bid)
    tick.ask_price.value = str(bid + Decimal("0.2"))
    tick.bid_size.value = "3"
    tick.ask_size.value = "1"
    tick.last_price.value = str(bid)
    tick.last_size.value = "0.5"
    tick.exchange_time.FromNanoseconds(T0 + i * 1_000_000)
    tick.receive_time.FromNanoseconds(T0 + i * 1_000_000 + 1000)
    return tick


async def test_ticks_become_feature_vectors_on_nats_kafka_and_get_features(
    infra_settings: Settings, redis_client: Redis
) -> None:
    symbol, quiet, unknown = (f"F{uuid.uuid4().hex[:10].upper()}-USD" for _ in range(3))
    # What marketdata publishes at start: the instrument universe.
    await redis_client.sadd(INSTRUMENTS_KEY, symbol, quiet)
    nc = await connect_harness(infra_settings)
    vectors: list[Msg] = []
    got_all = asyncio.Event()

    async def collect(msg: Msg) -> None:
        vectors.append(msg)
        if len(vectors) >= TICKS:
            got_all.set()

    await nc.subscribe(f"features.vectors.{symbol}", cb=collect)
    await nc.flush()
    publisher = NatsPublisher(nc, event_registry())
    try:
        async with (
            running_service(
                make_spec(group=f"features-test-{uuid.uuid4().hex[:8]}"), infra_settings
            ) as address,
            service_channel(address, "features") as channel,
        ):
            # In batches of up to 7 (one symbol: one partition), each tick
            # with the event id of its own Tick event, as marketdata sends them.
            tick_ids = {i: str(uuid.uuid4()) for i in range(1, TICKS + 1)}
            for first in range(1, TICKS + 1, 7):
                batch = [(tick_ids[i], _tick(symbol, i)) for i in range(first, min(first + 7, TICKS + 1))]
                (ticks,) = tick_batches(batch)
                envelope = new_envelope(ticks, tenant_id="", correlation_id="", producer="test")
                await publisher.publish(envelope, payload=ticks)
            await nc.flush()
            async with asyncio.timeout(20):
                await got_all.wait()

            last: features_events.FeatureVectorComputed | None = None
            for i, msg in enumerate(vectors, start=1):
                envelope = decode_envelope(msg.data)
                assert msg.headers is not None and msg.headers["x-event-type"] == VECTOR_EVENT
                assert msg.headers["x-causation-id"] == tick_ids[i] == envelope.causation_id
                # The tick's event id: the vector's cause and its correlation.
                assert envelope.correlation_id == tick_ids[i] and envelope.producer == "features"
                event = features_events.FeatureVectorComputed.FromString(envelope.payload.value)
                protovalidate.validate(event)
                assert (event.symbol, event.vector.tick_sequence, event.vector.tick_count) == (symbol, i, i)
                last = event
            assert last is not None
            v = last.vector
            expected_bid = Decimal("100") + Decimal(TICKS % 7) / 10
            assert Decimal(v.mid_price.value) == expected_bid + Decimal("0.1")
            assert Decimal(v.spread.value) == Decimal("0.2")
            assert v.order_book_imbalance == pytest.approx(0.5)
            assert v.warmed_up is (FeatureConfig().warm_up_ticks <= TICKS)
            assert v.feature_set_version == FeatureConfig().version
            assert v.as_of.ToNanoseconds() == T0 + TICKS * 1_000_000

            # Kafka: every vector, keyed by symbol.
            consumer = AIOKafkaConsumer(
                "trading.features.vectors",
                bootstrap_servers=infra_settings.kafka.servers,
                group_id=None,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            sequences: list[int] = []
            try:
                deadline = time.monotonic() + 20
                while len(sequences) < TICKS and time.monotonic() < deadline:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        for r in records:
                            if r.key == symbol.encode() and r.value is not None:
                                assert from_kafka(r.headers)["x-event-type"] == VECTOR_EVENT
                                payload = decode_envelope(r.value).payload.value
                                sequences.append(
                                    features_events.FeatureVectorComputed.FromString(
                                        payload
                                    ).vector.tick_sequence
                                )
            finally:
                await consumer.stop()
            assert sorted(sequences) == list(range(1, TICKS + 1))

            stub = pb_grpc.FeaturesServiceStub(channel)
            got = (await stub.GetFeatures(pb.GetFeaturesRequest(symbol=symbol), metadata=tenant_md())).vector
            assert got == v

            with pytest.raises(grpc.aio.AioRpcError) as not_yet:
                await stub.GetFeatures(pb.GetFeaturesRequest(symbol=quiet), metadata=tenant_md())
            details = error_details(not_yet.value)
            assert details.code == grpc.StatusCode.UNAVAILABLE and details.retry_delay_s == 1.0
            assert details.error_info is not None and details.error_info.reason == "FEATURES_NOT_AVAILABLE"

            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetFeatures(pb.GetFeaturesRequest(symbol=unknown), metadata=tenant_md())
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND

            # The latest vector reaches Redis for other replicas.
            deadline = time.monotonic() + 10
            while True:
                stored = await redis_client.get(vector_key(symbol))
                if isinstance(stored, bytes) and pb.FeatureVector.FromString(stored).tick_sequence == TICKS:
                    break
                assert time.monotonic() < deadline, "vector not written to Redis"
                await asyncio.sleep(0.05)
    finally:
        await nc.close()
        await redis_client.srem(INSTRUMENTS_KEY, symbol, quiet)
        await redis_client.delete(vector_key(symbol))


async def test_two_partitions_together_compute_every_symbol_exactly_once(
    infra_settings: Settings, redis_client: Redis
) -> None:
    """features started as 0/2 and 1/2 (TRADING_FEATURES__PARTITION): each
    subscribes to its half of the tick partitions only, so every symbol's
    vectors come from exactly one of them, every tick's exactly once."""
    symbols = [f"P{uuid.uuid4().hex[:10].upper()}-USD" for _ in range(12)]
    assert len({partition_of(s) % 2 for s in symbols}) == 2  # both halves have symbols
    await redis_client.sadd(INSTRUMENTS_KEY, *symbols)
    nc = await connect_harness(infra_settings)
    seen: list[tuple[str, str, int]] = []  # (subject, symbol, tick sequence)
    expected = sorted((f"features.vectors.{s}", s, i) for s in symbols for i in range(1, 4))
    got_all = asyncio.Event()

    async def collect(msg: Msg) -> None:
        event = features_events.FeatureVectorComputed.FromString(decode_envelope(msg.data).payload.value)
        seen.append((msg.subject, event.symbol, event.vector.tick_sequence))
        if len(seen) >= len(expected):
            got_all.set()

    for symbol in symbols:
        await nc.subscribe(f"features.vectors.{symbol}", cb=collect)
    await nc.flush()
    publisher = NatsPublisher(nc, event_registry())
    group = f"features-test-{uuid.uuid4().hex[:8]}"
    try:
        async with (
            running_service(make_spec(group, FeaturesSettings(partition="0/2")), infra_settings),
            running_service(make_spec(group, FeaturesSettings(partition="1/2")), infra_settings),
        ):
            for i in range(1, 4):
                ticks = [(str(uuid.uuid4()), _tick(s, i)) for s in symbols]
                for batch in tick_batches(ticks):
                    envelope = new_envelope(batch, tenant_id="", correlation_id="", producer="test")
                    await publisher.publish(envelope, payload=batch)
            await nc.flush()
            async with asyncio.timeout(20):
                await got_all.wait()
            await asyncio.sleep(0.3)  # a duplicate would arrive by now
            assert sorted(seen) == expected
    finally:
        await nc.close()
        await redis_client.srem(INSTRUMENTS_KEY, *symbols)
        for symbol in symbols:
            await redis_client.delete(vector_key(symbol))
