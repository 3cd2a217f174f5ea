"""The local broker's retention on a real SeaweedFS and tansu: a sweep deletes
the batches every committing group has read (not the newest, not those of a
partition nobody commits on), and the broker serves on from what is left:
the group resumes at its offset, a new group starts at the oldest kept batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from tools.infra import (
    ManagedProcess,
    free_port,
    seaweedfs_filer_url,
    start_seaweedfs,
    start_tansu,
    throwaway_s3_storage,
)
from tools.kafka_retention import Filer, sweep

pytestmark = pytest.mark.integration

READ = TopicPartition("retention-read", 0)
UNREAD = TopicPartition("retention-unread", 0)  # no group commits on it (like dead letters)


@dataclass
class Broker:
    servers: str
    filer_url: str
    bucket: str
    procs: tuple[ManagedProcess, ...]


@pytest_asyncio.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    port = free_port()
    s3 = throwaway_s3_storage(port)
    seaweedfs = await asyncio.to_thread(
        start_seaweedfs, port, tmp_path / "seaweedfs", s3, log_path=tmp_path / "seaweedfs.log"
    )
    try:
        tansu = await asyncio.to_thread(start_tansu, free_port(), log_path=tmp_path / "tansu.log", s3=s3)
    except BaseException:
        seaweedfs.stop()
        raise
    yield Broker(tansu.address, seaweedfs_filer_url(tmp_path / "seaweedfs"), s3.bucket, (tansu, seaweedfs))
    for proc in (tansu, seaweedfs):
        await asyncio.to_thread(proc.stop)


async def _started(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    # tansu answers on its port a moment before it serves (its S3 store opens).
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(KafkaConnectionError), stop=stop_after_delay(30), wait=wait_fixed(0.5),
        reraise=True,
    ):  # fmt: skip
        with attempt:
            await client.start()


async def _consume(servers: str, group: str, count: int, *, commit: bool) -> list[tuple[int, bytes]]:
    """`count` records of READ as `group` from its committed offset (earliest without one)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=6000, heartbeat_interval_ms=500,
    )  # fmt: skip
    await _started(consumer)
    try:
        consumer.assign([READ])
        got: list[tuple[int, bytes]] = []
        async with asyncio.timeout(30):
            while len(got) < count:
                for records in (
                    await consumer.getmany(READ, timeout_ms=300, max_records=count - len(got))
                ).values():
                    got.extend((r.offset, r.value or b"") for r in records)
        if commit:
            await consumer.commit({READ: got[-1][0] + 1})
        return got
    finally:
        await consumer.stop()


def _sweep(broker: Broker, retention_s: float) -> tuple[int, int]:
    with httpx.Client(timeout=30) as client:
        done = sweep(Filer(broker.filer_url, client), broker.bucket, retention_s=retention_s)
    return done.deleted, done.kept


async def test_a_sweep_deletes_only_what_every_group_read_and_the_broker_serves_on(broker: Broker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.servers, acks="all")
    await _started(producer)
    try:
        for i in range(10):  # one batch (one S3 object) each
            await producer.send_and_wait(READ.topic, f"r{i}".encode(), partition=0)
        for i in range(4):
            await producer.send_and_wait(UNREAD.topic, f"u{i}".encode(), partition=0)
    finally:
        await producer.stop()

    first = await _consume(broker.servers, "reader", 6, commit=True)
    assert first == [(i, f"r{i}".encode()) for i in range(6)]

    # Nothing is old enough yet.
    assert await asyncio.to_thread(_sweep, broker, 3600) == (0, 14)
    # Old enough: the six batches the group read go; four unread ones and the other topic stay.
    assert await asyncio.to_thread(_sweep, broker, 0) == (6, 8)
    assert await asyncio.to_thread(_sweep, broker, 0) == (0, 8)  # idempotent

    # The group resumes exactly where it was; a new group starts at the oldest kept batch.
    assert await _consume(broker.servers, "reader", 4, commit=True) == [
        (i, f"r{i}".encode()) for i in range(6, 10)
    ]
    assert await _consume(broker.servers, "newcomer", 4, commit=False) == [
        (i, f"r{i}".encode()) for i in range(6, 10)
    ]
    # All read now: all but the newest batch go; the uncommitted topic is still whole.
    assert await asyncio.to_thread(_sweep, broker, 0) == (3, 5)
