"""The Kafka broker killed with SIGKILL and restarted, under load.

Issue 12: tansu on memory storage lost 823 of 1,228 fills on a restart and
its consumers looped on UnknownTopicOrPartition forever. Here every test runs
its own SeaweedFS (S3) and tansu on spare ports:

- acked records (acks=all) survive a kill -9 of tansu on S3;
- a KafkaSubscriber resumes by itself after the broker comes back, from its
  committed offsets, and even after a broker that lost every topic (memory
  storage: it recreates them and rejoins);
- the platform trading across a kill -9 of the broker is a scenario of
  test_server_faults.py (reconciled like every fault scenario: harness.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY
from trading.common.v1 import decimal_pb2, event_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.config import KafkaSettings
from runtime.contracts import event_registry
from runtime.messaging import Event, new_envelope
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber, ensure_topics
from tools.infra import ManagedProcess, free_port, start_seaweedfs, start_tansu, throwaway_s3_storage

TICK = "trading.marketdata.v1.Tick"


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
        s3 = throwaway_s3_storage(port)
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

            # Caught up: the lag gauge says 0 for every partition it consumed
            # (it is set after each poll: the one after the last records may
            # still be in flight).
            def lags() -> dict[int, float | None]:
                return {
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

            async with asyncio.timeout(10):
                while not (lags() and all(lag in (0.0, None) for lag in lags().values())):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert any(lag == 0.0 for lag in lags().values()), lags()
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
