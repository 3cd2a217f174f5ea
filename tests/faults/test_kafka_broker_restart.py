"""The Kafka broker killed with SIGKILL and restarted, under load.

Issue 12: tansu on memory storage lost 823 of 1,228 fills on a restart and
its consumers looped on UnknownTopicOrPartition forever. Here every test runs
its own SeaweedFS (S3) and tansu on spare ports:

- acked records (acks=all) survive a kill -9 of tansu on S3;
- a KafkaSubscriber resumes by itself after the broker comes back, from its
  committed offsets, and even after a broker that lost every topic (memory
  storage: it recreates them and rejoins);
- the trading platform (execution, risk, portfolio as their own processes)
  keeps trading across a kill -9 of the broker; afterwards every accepted
  order has its fills and the positions equal the sum of the fills, with no
  fill lost or booked twice.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY
from trading.common.v1 import decimal_pb2, event_pb2, market_pb2
from trading.common.v1 import types_pb2 as common
from trading.execution.v1 import execution_service_pb2 as epb
from trading.execution.v1 import execution_service_pb2_grpc as epb_grpc
from trading.execution.v1 import types_pb2 as exec_types
from trading.marketdata.v1 import events_pb2 as md_events
from trading.portfolio.v1 import portfolio_service_pb2 as ppb
from trading.portfolio.v1 import portfolio_service_pb2_grpc as ppb_grpc

from runtime.config import KafkaSettings, Settings
from runtime.contracts import event_registry
from runtime.decimals import from_proto
from runtime.messaging import Event, new_envelope, unpack
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber, ensure_topics
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from tests.support.security import as_user, secure_channel
from tools.infra import ManagedProcess, S3Storage, free_port, start_seaweedfs, start_tansu
from tools.supervisor import isolated_settings, platform_running

TICK = "trading.marketdata.v1.Tick"
FILLS_TOPIC = "trading.execution.fills"


@dataclass
class Broker:
    """A tansu of the test's own, on its own SeaweedFS unless on memory storage."""

    tansu: ManagedProcess
    seaweedfs: ManagedProcess | None

    @property
    def address(self) -> str:
        return self.tansu.address

    def kill_and_restart(self) -> float:
        """SIGKILL the broker, start it again on the same storage; seconds until it listens."""
        self.tansu.kill()
        began = time.monotonic()
        self.tansu.start().wait_ready(30.0)
        return time.monotonic() - began


def _start_broker(tmp_path: Path, *, storage: str = "s3") -> Broker:
    seaweedfs = None
    s3 = None
    if storage == "s3":
        port = free_port()
        s3 = S3Storage(
            endpoint=f"http://127.0.0.1:{port}",
            bucket="tansu",
            access_key=secrets.token_urlsafe(9),
            secret_key=secrets.token_urlsafe(24),
        )
        seaweedfs = start_seaweedfs(port, tmp_path / "seaweedfs", s3, log_path=tmp_path / "seaweedfs.log")
    try:
        tansu = start_tansu(free_port(), log_path=tmp_path / "tansu.log", s3=s3)
    except BaseException:
        if seaweedfs is not None:
            seaweedfs.stop()
        raise
    return Broker(tansu, seaweedfs)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = _start_broker(tmp_path)
    yield b
    b.tansu.stop()
    if b.seaweedfs is not None:
        b.seaweedfs.stop()


@pytest.fixture
def memory_broker(tmp_path: Path) -> Iterator[Broker]:
    """tansu on memory storage: a restart loses every topic (the lost-metadata case)."""
    b = _start_broker(tmp_path, storage="memory")
    yield b
    b.tansu.stop()


# --------------------------------------------------------------- the broker alone


async def test_acked_records_survive_kill_9_of_tansu_on_s3(broker: Broker) -> None:
    topic = "durable"
    count = 200
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.address)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.address, acks="all")
    await producer.start()
    latencies: list[float] = []
    try:
        for i in range(count):
            began = time.perf_counter()
            await producer.send_and_wait(topic, f"record-{i}".encode(), key=str(i % 7).encode())
            latencies.append(time.perf_counter() - began)
    finally:
        await producer.stop()

    restart_s = broker.kill_and_restart()

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.address, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in (0, 1)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while len(got) < count:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    got.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(f"record-{i}".encode() for i in range(count))
    latencies.sort()
    print(
        f"\nacks=all on S3: p50 {latencies[count // 2] * 1000:.1f} ms, "
        f"p99 {latencies[int(count * 0.99)] * 1000:.1f} ms; broker back {restart_s:.2f}s after kill -9"
    )


# --------------------------------------------------------------- a subscriber


def _tick(symbol: str, sequence: int) -> tuple[event_pb2.EventEnvelope, md_events.Tick]:
    tick = md_events.Tick(
        symbol=symbol,
        bid_price=decimal_pb2.Decimal(value="100.25"),
        ask_price=decimal_pb2.Decimal(value="100.5"),
        sequence=sequence,
        source="test",
    )
    tick.exchange_time.GetCurrentTime()
    tick.receive_time.GetCurrentTime()
    envelope = new_envelope(tick, tenant_id="", correlation_id=f"c-{sequence}", producer="tests.faults")
    return envelope, tick


@dataclass
class Consumed:
    """What a subscriber's handler saw: event ids in order, and when the last came."""

    ids: list[str]
    last_at: float = 0.0

    async def handle(self, event: Event) -> None:
        self.ids.append(event.envelope.event_id)
        self.last_at = time.monotonic()


async def _publish(publisher: KafkaPublisher, first: int, count: int) -> list[str]:
    """Publish ticks `first`..`first+count-1`, each until acked (the broker may be coming back)."""
    ids = []
    for seq in range(first, first + count):
        envelope, tick = _tick(f"S{seq % 3}", seq)
        async with asyncio.timeout(60):
            while True:
                try:
                    await publisher.publish(envelope, payload=tick)
                    break
                except Exception:  # the broker restarting: the same event again (same id)
                    await asyncio.sleep(0.2)
        ids.append(envelope.event_id)
    return ids


@pytest_asyncio.fixture(loop_scope="session")
async def fast_settings() -> KafkaSettings:
    # Heal quickly: the test waits for it.
    return KafkaSettings(consumer_heal_after_s=3.0, consumer_metadata_max_age_ms=2000)


async def test_subscriber_resumes_from_commits_after_kill_9_of_broker(
    broker: Broker, fast_settings: KafkaSettings
) -> None:
    settings = fast_settings.model_copy(update={"bootstrap_servers": broker.address})
    registry = event_registry()
    topic = registry.route(TICK).kafka_topic
    await ensure_topics(settings, [topic, topic + ".dlq"])
    consumed = Consumed([])
    async with KafkaPublisher(settings, registry) as publisher:
        subscriber = KafkaSubscriber(
            settings, registry, consumed.handle, group="faults", event_types=[TICK], dead_letters=publisher
        )
        async with subscriber:
            await subscriber.wait_assigned(30)
            before = await _publish(publisher, 0, 30)
            async with asyncio.timeout(30):
                while not set(before) <= set(consumed.ids):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            delivered_before = len(consumed.ids)

            broker.tansu.kill()
            # Down for a while: the subscriber says it is stalled (for a health watchdog).
            async with asyncio.timeout(15):
                while subscriber.stalled_reason is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            stalled_reason = subscriber.stalled_reason
            broker.tansu.start().wait_ready(30.0)
            restarted = time.monotonic()
            after = await _publish(publisher, 30, 30)
            async with asyncio.timeout(60):
                while not set(after) <= set(consumed.ids):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            resumed_s = consumed.last_at - restarted
            # Healthy again, and says so.
            async with asyncio.timeout(15):
                while subscriber.stalled_reason is not None:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert time.monotonic() - subscriber.last_progress_monotonic < 5
            heals = subscriber.heals
            # Caught up: the lag gauge says 0 for every partition it consumed.
            lags = {
                tp.partition: REGISTRY.get_sample_value(
                    "trading_messaging_consumer_lag",
                    {
                        "transport": "kafka",
                        "consumer": subscriber.name,
                        "source": f"{tp.topic}/{tp.partition}",
                    },
                )
                for tp in subscriber._consumer.assignment()
            }
            assert lags and all(lag in (0.0, None) for lag in lags.values()), lags
            assert any(lag == 0.0 for lag in lags.values()), lags
            # A forced heal (what a watchdog may do): a new consumer resumes at
            # the committed offsets, so nothing is lost and nothing comes again.
            seen = len(consumed.ids)
            assert await subscriber.heal()
            more = await _publish(publisher, 60, 10)
            async with asyncio.timeout(30):
                while not set(more) <= set(consumed.ids):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert sorted(consumed.ids[seen:]) == sorted(more), "a heal lost or repeated events"
    # Nothing lost; at-least-once allows repeats, but only of events after the
    # last commit before the kill (none here: every batch was committed).
    assert set(consumed.ids) == set(before) | set(after) | set(more)
    assert len(set(consumed.ids[:delivered_before])) == delivered_before
    assert not set(consumed.ids[delivered_before:]) & set(before), "resumed before the committed offsets"
    print(
        f"\nsubscriber (S3): all {len(after)} events after the restart "
        f"consumed {resumed_s:.1f}s after the broker came back; stalled meanwhile ({stalled_reason}); "
        f"{heals} heal(s) on its own; "
        f"{len(consumed.ids) - len(set(consumed.ids))} repeat(s)"
    )


async def test_subscriber_heals_when_broker_lost_its_log(
    memory_broker: Broker, fast_settings: KafkaSettings
) -> None:
    """The issue's case: the broker came back empty (memory storage: no
    records, no group offsets, topics recreated on first use), and its
    consumers sat at their old offsets, past the end of the new log, forever.
    The subscriber notices, heals (a fresh consumer at the earliest offset)
    and consumes what is published afterwards."""
    settings = fast_settings.model_copy(update={"bootstrap_servers": memory_broker.address})
    registry = event_registry()
    topic = registry.route(TICK).kafka_topic
    await ensure_topics(settings, [topic, topic + ".dlq"])
    consumed = Consumed([])
    async with KafkaPublisher(settings, registry) as publisher:
        subscriber = KafkaSubscriber(
            settings, registry, consumed.handle, group="faults", event_types=[TICK], dead_letters=publisher
        )
        async with subscriber:
            await subscriber.wait_assigned(30)
            before = await _publish(publisher, 0, 30)
            async with asyncio.timeout(30):
                while not set(before) <= set(consumed.ids):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            memory_broker.kill_and_restart()
            restarted = time.monotonic()
            async with asyncio.timeout(45):
                while subscriber.heals == 0 or subscriber.stalled_reason is not None:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            healed_s = time.monotonic() - restarted
            after = await _publish(publisher, 30, 30)
            async with asyncio.timeout(30):
                while not set(after) <= set(consumed.ids):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
    assert set(consumed.ids) == set(before) | set(after)
    print(f"\nsubscriber (broker lost its log): healed {healed_s:.1f}s after the broker came back")


# --------------------------------------------------------------- the platform

# The fills' path: execution (orders, risk check, paper fills, outbox relay to
# Kafka), risk, portfolio (books the fills it consumes from Kafka).
SERVICES = ("risk", "execution", "portfolio")
SYMBOLS = ("BTC-USD", "ETH-USD")
SCOPES = ("orders:read", "orders:write", "portfolio:read")
PHASE_S = 4.0  # trading before the kill, while the broker is down, after the restart


def _dec(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)


@dataclass
class Platform:
    settings: Settings
    broker: Broker
    startup_s: float
    execution: epb_grpc.ExecutionServiceAsyncStub
    portfolio: ppb_grpc.PortfolioServiceAsyncStub

    def md(self, service: str, tenant: str) -> tuple[tuple[str, str], ...]:
        return as_user(self.settings, service, tenant, subject="trader", scopes=SCOPES)


@pytest_asyncio.fixture(loop_scope="session")
async def platform(infra_settings: Settings, tmp_path: Path) -> AsyncIterator[Platform]:
    broker = _start_broker(tmp_path / "kafka")
    try:
        settings = isolated_settings(infra_settings, tmp_path / "var")
        settings.telemetry.log_level = "WARNING"
        # The test's broker, which it kills; the services start nothing for Kafka.
        settings.kafka.bootstrap_servers = broker.address
        async with (
            platform_running(settings, SERVICES, ready_timeout=90.0) as startup_s,
            secure_channel(settings, settings.address_of("execution"), "execution") as ech,
            secure_channel(settings, settings.address_of("portfolio"), "portfolio") as pch,
        ):
            yield Platform(
                settings,
                broker,
                startup_s,
                epb_grpc.ExecutionServiceStub(ech),
                ppb_grpc.PortfolioServiceStub(pch),
            )
    finally:
        broker.tansu.stop()
        if broker.seaweedfs is not None:
            broker.seaweedfs.stop()


async def _fresh_quotes(settings: Settings) -> None:
    """marketdata's part: the last quote of each symbol in Redis."""
    redis = open_redis(settings, REDIS_ADMIN)
    try:
        for symbol in SYMBOLS:
            quote = market_pb2.Quote(
                symbol=symbol,
                bid_price=_dec("99.5"),
                bid_size=_dec("1000"),
                ask_price=_dec("100"),
                ask_size=_dec("1000"),
            )
            quote.receive_time.FromDatetime(datetime.now(UTC))
            await redis.set(f"md:quote:{symbol}", quote.SerializeToString(), ex=600)
    finally:
        await redis.aclose()


@dataclass
class Trader:
    """Places market IOC orders one after another until told to stop."""

    platform: Platform
    tenant: str
    accepted: dict[str, exec_types.Order]
    failed: int = 0
    placed: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.placed += 1
            n = self.placed
            if n % 20 == 1:
                await _fresh_quotes(self.platform.settings)
            try:
                reply = await self.platform.execution.PlaceOrder(
                    epb.PlaceOrderRequest(
                        client_order_id=f"f{n}",
                        symbol=SYMBOLS[n % 2],
                        side=common.SIDE_SELL if n % 3 == 0 else common.SIDE_BUY,
                        type=market_pb2.ORDER_TYPE_MARKET,
                        time_in_force=exec_types.TIME_IN_FORCE_IOC,
                        quantity=_dec(f"0.{n % 9 + 1}"),
                    ),
                    metadata=self.platform.md("execution", self.tenant),
                    timeout=10,
                )
            except Exception:
                self.failed += 1  # not accepted: nothing to reconcile for it
                await asyncio.sleep(0.1)
                continue
            self.accepted[reply.order.order_id] = reply.order
            await asyncio.sleep(0.02)


async def _fills_in_kafka(servers: str, tenant: str) -> dict[str, list[exec_types.Fill]]:
    """Every copy of the tenant's fill events on Kafka, by event id (read to the end offsets)."""
    registry = event_registry()
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(FILLS_TOPIC, p) for p in consumer.partitions_for_topic(FILLS_TOPIC) or ()]
        assert parts, "no fills topic"
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        copies: dict[str, list[exec_types.Fill]] = {}
        async with asyncio.timeout(30):
            while any([await consumer.position(p) < ends[p] for p in parts]):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        envelope = event_pb2.EventEnvelope.FromString(record.value or b"")
                        if envelope.tenant_id == tenant:
                            payload = unpack(envelope, registry)
                            copies.setdefault(envelope.event_id, []).append(payload.fill)  # type: ignore[attr-defined]
        return copies
    finally:
        await consumer.stop()


def _signed(fill: exec_types.Fill) -> Decimal:
    qty = from_proto(fill.quantity)
    return qty if fill.side == common.SIDE_BUY else -qty


async def test_trading_across_kill_9_of_the_broker_loses_and_doubles_nothing(platform: Platform) -> None:
    tenant = f"kafka-fault-{secrets.token_hex(4)}"
    trader = Trader(platform, tenant, {})
    stop = asyncio.Event()
    trading = asyncio.create_task(trader.run(stop))
    try:
        await asyncio.sleep(PHASE_S)
        before_kill = len(trader.accepted)
        platform.broker.tansu.kill()
        await asyncio.sleep(PHASE_S)  # orders go on: execution's outbox holds their events
        during_outage = len(trader.accepted) - before_kill
        platform.broker.tansu.start().wait_ready(30.0)
        restarted = time.monotonic()
        await asyncio.sleep(PHASE_S)
    finally:
        stop.set()
        await trading
    assert before_kill > 0 and during_outage > 0, (before_kill, during_outage)

    async def positions() -> dict[str, tuple[Decimal, int]]:
        reply = await platform.portfolio.GetPositions(
            ppb.GetPositionsRequest(include_closed=True),
            metadata=platform.md("portfolio", tenant),
            timeout=10,
        )
        return {p.symbol: (from_proto(p.quantity), p.version) for p in reply.positions}

    # Settled: every accepted order's fills are in Kafka and booked.
    orders = trader.accepted
    want_fills = {o.order_id for o in orders.values() if from_proto(o.filled_quantity) > 0}
    async with asyncio.timeout(60):
        while True:
            copies = await _fills_in_kafka(platform.broker.address, tenant)
            fills = {event_id: cs[0] for event_id, cs in copies.items()}
            booked = sum(version for _, version in (await positions()).values())
            if {f.order_id for f in fills.values()} >= want_fills and booked >= len(fills):
                break
            await asyncio.sleep(0.5)
    settled_s = time.monotonic() - restarted

    # ---- Kafka: each fill once (a re-published copy carries the same event id and bytes)
    for event_id, cs in copies.items():
        assert all(c == cs[0] for c in cs), f"copies of {event_id} differ"
    assert len({f.execution_id for f in fills.values()}) == len(fills), "a fill has two event ids"
    # ---- every accepted order has its fills, adding up to its filled quantity
    by_order: dict[str, list[exec_types.Fill]] = {}
    for f in fills.values():
        by_order.setdefault(f.order_id, []).append(f)
    assert set(by_order) <= set(orders), "fills of orders nobody placed"
    for order_id, order in orders.items():
        got = sum((from_proto(f.quantity) for f in by_order.get(order_id, [])), Decimal(0))
        assert got == from_proto(order.filled_quantity), (order_id, got, order.filled_quantity)
    # ---- positions: the sum of the fills per instrument, each fill booked once
    final = await positions()
    for symbol in SYMBOLS:
        of_symbol = [f for f in fills.values() if f.symbol == symbol]
        if not of_symbol:
            continue
        quantity, version = final[symbol]
        assert quantity == sum((_signed(f) for f in of_symbol), Decimal(0)), symbol
        assert version == len(of_symbol), f"{symbol}: {version} bookings of {len(of_symbol)} fills"
    duplicates = sum(len(cs) - 1 for cs in copies.values())
    print(
        f"\nplatform ({', '.join(SERVICES)}) SERVING after {platform.startup_s:.1f}s; "
        f"{len(orders)} orders accepted ({before_kill} before the kill, {during_outage} while the broker "
        f"was down, {trader.failed} refused), {len(fills)} fills; all in Kafka and booked "
        f"{settled_s:.1f}s after the restart; {duplicates} duplicate copies in Kafka (deduplicated)"
    )
