"""tools.infra: each embedded server really starts, answers its protocol and stops."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import asyncpg
import nats
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from redis.asyncio import Redis
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from runtime.config import (
    ClickHouseSettings,
    KafkaSettings,
    NatsSettings,
    PostgresSettings,
    RedisSettings,
    Settings,
    VectorSettings,
)
from tools import infra
from tools.infra import (
    LocalInfra,
    ManagedProcess,
    free_port,
    port_answers,
    start_nats,
    start_postgres,
    start_redis,
    start_tansu,
    wait_for_port,
)


async def test_tansu_speaks_kafka(unique_id: str) -> None:
    proc = start_tansu(free_port())
    try:
        assert infra.find_tansu_binary().name == "tansu"
        topic = f"infra-{unique_id}"
        admin = AIOKafkaAdminClient(bootstrap_servers=proc.address)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=proc.address)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=proc.address, auto_offset_reset="earliest")
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), 10)
            assert (msg.key, msg.value) == (b"k", b"hello")
        finally:
            await consumer.stop()
    finally:
        assert proc.stop() is not None
    assert not proc.alive
    assert not port_answers("127.0.0.1", proc.port or 0)


async def test_nats_with_jetstream(tmp_path: Path, unique_id: str) -> None:
    proc = start_nats(free_port(), tmp_path / "js")
    try:
        nc = await nats.connect(f"nats://{proc.address}")
        try:
            js = nc.jetstream()
            await js.add_stream(name=f"S{unique_id}", subjects=[f"infra.{unique_id}.>"])
            ack = await js.publish(f"infra.{unique_id}.x", b"1")
            assert ack.seq == 1
        finally:
            await nc.close()
        assert any((tmp_path / "js").rglob("*"))  # file store in the given dir
    finally:
        proc.stop()


async def test_redis_server() -> None:
    proc = start_redis(free_port())
    try:
        client = Redis(host="127.0.0.1", port=proc.port or 0)
        try:
            await client.set("k", "v")
            assert await client.get("k") == b"v"
            assert (await client.config_get("save"))["save"] == ""
        finally:
            await client.aclose()
    finally:
        proc.stop()


async def test_embedded_postgres_runs_unprivileged_and_restarts_with_its_data(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "pg" / "data"
    proc = start_postgres(port, data, fast=True)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        finally:
            await conn.close()
        proc.stop()
        assert not port_answers("127.0.0.1", port)
        proc = start_postgres(port, data, fast=True)  # no second initdb: same cluster
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 7
        finally:
            await conn.close()
    finally:
        proc.stop()


def test_stop_escalates_to_sigkill() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('up', flush=True); time.sleep(60)"
    )
    proc = ManagedProcess("stubborn", [sys.executable, "-c", code]).start()
    deadline = time.monotonic() + 5
    while "up" not in proc.log_tail() and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    assert proc.stop(timeout=0.3) == -9
    assert time.monotonic() - started < 3
    assert not proc.alive


def test_a_process_that_dies_fails_fast_with_its_log() -> None:
    proc = ManagedProcess(
        "dies",
        [sys.executable, "-c", "print('boom'); raise SystemExit(3)"],
        host="127.0.0.1",
        port=free_port(),
    ).start()
    with pytest.raises(RuntimeError, match="boom"):
        proc.wait_ready(5)


async def test_wait_for_port_times_out() -> None:
    with pytest.raises(TimeoutError):
        await wait_for_port("127.0.0.1", free_port(), timeout=0.2)


def _isolated_settings(tmp_path: Path) -> Settings:
    pg, rd, nt, kf = (free_port() for _ in range(4))
    return Settings(
        var_dir=tmp_path / "var",
        postgres=PostgresSettings(
            dsn=f"postgresql://postgres@127.0.0.1:{pg}/app_db",
            admin_dsn=f"postgresql://postgres@127.0.0.1:{pg}/postgres",
        ),
        redis=RedisSettings(url=f"redis://127.0.0.1:{rd}/0"),
        nats=NatsSettings(url=f"nats://127.0.0.1:{nt}"),
        kafka=KafkaSettings(local_port=kf, s3_port=free_port()),
        clickhouse=ClickHouseSettings(chdb_path=tmp_path / "var" / "chdb"),
        vectors=VectorSettings(postgres_dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/app_db"),
    )


async def test_local_infra_starts_what_is_missing_and_stops_only_that(tmp_path: Path) -> None:
    settings = _isolated_settings(tmp_path)
    first = LocalInfra(settings, fast=True)
    await first.start()
    try:
        servers = {"postgres", "vectors", "redis", "nats", "s3", "kafka-retention", "kafka"}
        assert set(first.started) == servers
        assert any(line.startswith("s3: started SeaweedFS on 127.0.0.1:") for line in first.lines)
        assert any(
            line.startswith("kafka: started tansu on 127.0.0.1:") and "storing on http://" in line
            for line in first.lines
        )
        assert settings.clickhouse.chdb_path.is_dir()
        conn = await asyncpg.connect(settings.postgres.dsn)  # the app database was created
        await conn.close()
        # ...and on the vectors server (embedded PostgreSQL 18), its database, with pgvector available.
        conn = await asyncpg.connect(settings.vectors.postgres_dsn)
        try:
            assert await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        finally:
            await conn.close()
        assert all(ok for _, ok in infra.status(settings).values())

        # A second instance finds everything running: it starts and stops nothing.
        second = LocalInfra(settings)
        async with second:
            assert second.started == {}
            assert {line.split(":")[0] for line in second.lines if "reusing" in line} == {
                "postgres",
                "vectors",
                "redis",
                "nats",
                "kafka",
            }
        assert all(p.alive for p in first.started.values())
    finally:
        procs = list(first.started.values())
        await asyncio.to_thread(first.stop)
    assert not any(p.alive for p in procs)
    assert not any(ok for name, (_, ok) in infra.status(settings).items() if name != "clickhouse")


async def test_local_infra_kafka_keeps_acked_records_across_a_restart(tmp_path: Path) -> None:
    """tansu as `./dev run` starts it stores on S3 (SeaweedFS in var_dir, keys
    from the secrets there): records acked before a stop are there after the
    next start."""
    settings = _isolated_settings(tmp_path)
    settings.kafka.bootstrap_servers = ""
    values = [f"v{i}".encode() for i in range(50)]
    kafka_only = ("s3", "kafka-retention", "kafka")

    async def up() -> LocalInfra:
        local = LocalInfra(settings, fast=True)
        await asyncio.to_thread(local._start_kafka)  # only Kafka: the other servers play no part
        assert set(local.started) == set(kafka_only)
        return local

    async def started(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
        # The port answers a moment before tansu serves (its S3 store is still
        # being opened): a loaded machine has seen it close the first
        # connections. A client retries its bootstrap, as the services do.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(KafkaConnectionError),
            stop=stop_after_delay(30),
            wait=wait_fixed(0.5),
            reraise=True,
        ):
            with attempt:
                await client.start()

    local = await up()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.servers, acks="all")
        await started(producer)
        try:
            for v in values:
                await producer.send_and_wait("kept", v, partition=0)
        finally:
            await producer.stop()
    finally:
        await asyncio.to_thread(local.stop)
    local = await up()
    try:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.servers, enable_auto_commit=False)
        await started(consumer)
        try:
            tp = TopicPartition("kept", 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got: list[bytes] = []
            async with asyncio.timeout(30):
                while len(got) < len(values):
                    for records in (await consumer.getmany(timeout_ms=300)).values():
                        got.extend(r.value or b"" for r in records)
        finally:
            await consumer.stop()
    finally:
        await asyncio.to_thread(local.stop)
    assert got == values


async def test_local_infra_reuses_shared_servers(infra_settings: Settings, tansu: ManagedProcess) -> None:
    # infra_settings points at the shared PostgreSQL/Redis/NATS and the session's tansu.
    async with LocalInfra(infra_settings) as li:
        assert li.started == {}
        assert f"kafka: using configured brokers {tansu.address}" in li.lines
    assert tansu.alive


def test_cli_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("TRADING_KAFKA__LOCAL_PORT", str(free_port()))
    monkeypatch.setenv("TRADING_CLICKHOUSE__CHDB_PATH", str(tmp_path))
    assert infra.main(["status"]) == 1  # kafka is down on that port
    out = capsys.readouterr().out
    assert "kafka" in out and "DOWN" in out and "postgres" in out
