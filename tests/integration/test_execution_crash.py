"""Crash safety of execution's transactional outbox with a real process kill.

execution runs as its own process (``python -m services.execution``, started
by the supervisor's ``start_services``) against real PostgreSQL, NATS and a
tansu broker of this test; risk and portfolio run in this process on their
real wiring. Two loopback forwarders (tests.support.faultproxy) sit between
the execution process and its Kafka broker and its PostgreSQL, so the test can
stop the bytes at exact points without any hook in the service:

A. killed after the commit, before the publish: Kafka traffic is held, orders
   are placed (committed with their outbox rows, the relay's Produce request
   stuck in the proxy), then the process gets SIGKILL and the held bytes are
   dropped. After a restart every pending event reaches Kafka and NATS exactly
   once.
B. killed after the publish, before the outbox rows are marked sent: the
   relay's first Produce request holds PostgreSQL, so its "mark sent"
   never commits; SIGKILL. After a restart the rows are published again with
   the same event ids and identical bytes; consumers deduplicate by event id:
   JetStream (Nats-Msg-Id) keeps one copy, and portfolio applies every fill
   once, so the positions equal the sum of the fills.

tansu advertises the Kafka proxy's address, so every Kafka client of this
broker (execution, portfolio, the test's reader) goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from nats.js.api import ConsumerConfig, DeliverPolicy
from trading.common.v1 import decimal_pb2, event_pb2, market_pb2
from trading.common.v1 import types_pb2 as common
from trading.execution.v1 import execution_service_pb2 as pb
from trading.execution.v1 import execution_service_pb2_grpc as pb_grpc
from trading.execution.v1 import types_pb2 as types
from trading.portfolio.v1 import portfolio_service_pb2 as pf
from trading.portfolio.v1 import portfolio_service_pb2_grpc as pf_grpc

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from services.portfolio.main import make_spec as portfolio_spec
from tests.support.faultproxy import FaultProxy, kafka_api_key
from tests.support.nats import connect_harness
from tests.support.risk import risk_spec
from tests.support.security import service_channel, user_md
from tests.support.services import running_service
from tools.infra import ManagedProcess, find_tansu_binary, free_port
from tools.supervisor import ServiceProcess, start_services, stop_services, wait_serving

TOPICS = ("trading.execution.orders", "trading.execution.fills")
PRODUCE = 0  # Kafka API key of a Produce request
METADATA = 3  # ... and of a Metadata request (a Produce waits for a due refresh)
DEADLINE_S = 60.0  # generous: a loaded CI machine (2 cores) is slow, not wrong


def D(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)


async def poll(what: str, check: Callable[[], Awaitable[bool]], timeout: float = DEADLINE_S) -> None:
    """Wait until `check()` holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")
        await asyncio.sleep(0.05)


def start_tansu_behind(proxy_port: int, log_path: Path) -> ManagedProcess:
    """A tansu broker on a spare port that advertises `proxy_port` to its clients."""
    port = free_port()
    argv = [
        str(find_tansu_binary()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{proxy_port}",
        "--storage-engine",
        "memory://tansu/",
    ]
    # tansu also reads its options from environment variables: give it none.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
    }
    proc = ManagedProcess("tansu-crash", argv, host="127.0.0.1", port=port, log_path=log_path, env=env)
    return proc.start().wait_ready()


def via(dsn: str, port: int) -> str:
    """`dsn` dialled through a proxy on 127.0.0.1:`port`."""
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


class Execution:
    """The execution service as a real child process: start, SIGKILL, restart."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: ServiceProcess | None = None

    async def start(self) -> None:
        [self.proc] = await start_services(self.settings, ["execution"])
        not_ready = await wait_serving(self.settings, ["execution"], timeout=60)
        assert not not_ready, "execution did not become SERVING"

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.process.send_signal(signal.SIGKILL)
        assert await self.proc.process.wait() == -signal.SIGKILL
        await self.proc.pump
        self.proc = None

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_services([self.proc], grace=10)
            self.proc = None


@dataclass(frozen=True)
class KafkaLog:
    """The tenant's envelopes on the execution topics, per topic in log order
    (one order's events share a key, so a partition, so an order)."""

    records: list[tuple[str, bytes]]

    def copies(self) -> dict[str, list[bytes]]:
        """Every copy of each event id (duplicates must be byte-identical)."""
        out: dict[str, list[bytes]] = {}
        for _, raw in self.records:
            out.setdefault(event_pb2.EventEnvelope.FromString(raw).event_id, []).append(raw)
        return out

    def first_copies(self, topic: str) -> list[str]:
        """Event ids on `topic` in log order, repeats left out."""
        seen: dict[str, None] = {}
        for t, raw in self.records:
            if t == topic:
                seen.setdefault(event_pb2.EventEnvelope.FromString(raw).event_id, None)
        return list(seen)


async def kafka_log(servers: str, tenant: str) -> KafkaLog:
    """Everything of `tenant` on the execution topics now (read up to the end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(t, p) for t in TOPICS for p in consumer.partitions_for_topic(t) or ()]
        assert parts, "the execution topics do not exist"
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        per_partition: dict[TopicPartition, list[bytes]] = {p: [] for p in parts}
        deadline = time.monotonic() + DEADLINE_S
        while any([await consumer.position(p) < ends[p] for p in parts]):
            assert time.monotonic() < deadline, "could not read the execution topics"
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for record in records:
                    assert record.value is not None
                    if event_pb2.EventEnvelope.FromString(record.value).tenant_id == tenant:
                        per_partition[tp].append(record.value)
        return KafkaLog([(tp.topic, raw) for tp, raws in per_partition.items() for raw in raws])
    finally:
        await consumer.stop()


async def nats_event_ids(settings: Settings, tenant: str) -> Counter[str]:
    """Event ids of the tenant's order updates stored in JetStream."""
    nc = await connect_harness(settings)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"execution.orders.{tenant}.*",
            durable=None,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        ids: Counter[str] = Counter()
        while True:
            try:
                msgs = await sub.fetch(100, timeout=1.0)
            except TimeoutError:
                return ids
            for msg in msgs:
                ids[event_pb2.EventEnvelope.FromString(msg.data).event_id] += 1
                await msg.ack()
    finally:
        await nc.close()


async def outbox(pool: asyncpg.Pool, tenant: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        """SELECT id, event_id::text AS event_id, event_type, destination, partition_key, envelope, sent_at
           FROM execution.outbox WHERE tenant_id = $1 ORDER BY id""",
        tenant,
    )
    return rows


async def live_sent(pool: asyncpg.Pool, tenant: str) -> bool:
    """Every NATS row sent: the relay's NATS lane does not wait for Kafka (runtime.outbox, lanes)."""
    return not await pool.fetchval(
        "SELECT count(*) FROM execution.outbox"
        " WHERE tenant_id = $1 AND sent_at IS NULL AND destination = 'nats'",
        tenant,
    )


async def all_sent(pool: asyncpg.Pool, tenant: str) -> bool:
    return not await pool.fetchval(
        "SELECT count(*) FROM execution.outbox WHERE tenant_id = $1 AND sent_at IS NULL", tenant
    )


@contextlib.asynccontextmanager
async def connections(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def test_execution_killed_between_commit_and_publish_loses_and_invents_nothing(
    infra_settings: Settings, tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:8]
    tenant = f"crash-{uid}"
    symbols = [f"K{uid.upper()}", f"Q{uid.upper()}"]
    redis = open_redis(infra_settings, REDIS_ADMIN)

    async def fresh_quotes() -> None:  # marketdata's part: the last quote cache
        for symbol in symbols:
            quote = market_pb2.Quote(
                symbol=symbol, bid_price=D("99.5"), bid_size=D("1000"), ask_price=D("100"), ask_size=D("1000")
            )
            quote.receive_time.FromDatetime(datetime.now(UTC))
            await redis.set(f"md:quote:{symbol}", quote.SerializeToString(), ex=600)

    kafka_port = free_port()
    tansu = start_tansu_behind(kafka_port, tmp_path / "tansu.log")
    pg = urlsplit(infra_settings.postgres.dsn)
    assert tansu.port is not None and pg.port is not None
    kafka_proxy = FaultProxy("127.0.0.1", tansu.port, port=kafka_port)
    pg_proxy = FaultProxy(pg.hostname or "127.0.0.1", pg.port)
    execution: Execution | None = None
    placed = 0
    try:
        async with kafka_proxy, pg_proxy, connections(infra_settings) as pool:
            kafka = infra_settings.kafka.model_copy(
                update={"bootstrap_servers": kafka_proxy.address, "local_port": kafka_port}
            )
            with_kafka = infra_settings.model_copy(update={"kafka": kafka})
            portfolio = portfolio_spec(fills_group=f"portfolio.fills.{uid}")
            async with (
                running_service(risk_spec(), infra_settings) as risk_address,
                running_service(portfolio, with_kafka) as pf_address,
                service_channel(pf_address, "portfolio") as pf_channel,
            ):
                settings = with_kafka.model_copy(deep=True)
                settings.service_addresses = {"risk": risk_address, "execution": f"127.0.0.1:{free_port()}"}
                settings.postgres.dsn = via(infra_settings.postgres.dsn, pg_proxy.port)
                settings.telemetry.metrics_port = free_port()
                execution = Execution(settings)
                await execution.start()

                async def place(n: int) -> list[str]:
                    """n market IOC orders (buys and some sells), each filled at once."""
                    nonlocal placed
                    await fresh_quotes()
                    ids = []
                    # The execution process reads its certificates from the same <var_dir>/pki.
                    async with service_channel(settings.address_of("execution"), "execution") as channel:
                        stub = pb_grpc.ExecutionServiceStub(channel)
                        for _ in range(n):
                            placed += 1
                            reply = await stub.PlaceOrder(
                                pb.PlaceOrderRequest(
                                    client_order_id=f"c{placed}",
                                    symbol=symbols[placed % 2],
                                    side=common.SIDE_SELL if placed % 3 == 0 else common.SIDE_BUY,
                                    type=market_pb2.ORDER_TYPE_MARKET,
                                    time_in_force=types.TIME_IN_FORCE_IOC,
                                    quantity=D(f"{placed}.5"),
                                ),
                                metadata=user_md("execution", tenant),
                                timeout=10,
                            )
                            assert reply.order.status == types.ORDER_STATUS_FILLED
                            ids.append(reply.order.order_id)
                    return ids

                async def publish_held() -> bool:
                    # The publish is stuck in the proxy: its Produce is held, or the
                    # metadata refresh the producer does first (seen on a loaded machine).
                    return any(kafka_api_key(c) in (PRODUCE, METADATA) for c in kafka_proxy.held_chunks)

                async def log() -> KafkaLog:
                    return await kafka_log(kafka_proxy.address, tenant)

                # Warm up: the producer learns both topics (so the next publish is a Produce).
                await place(2)
                await poll("warm-up events published", lambda: all_sent(pool, tenant))

                # ---- A: SIGKILL after the commit, before the publish.
                kafka_proxy.hold()
                orders_a = set(await place(4))
                await poll("the relay's publish held in the Kafka proxy", publish_held)
                # The NATS lane goes on while Kafka is held: the live updates go out.
                await poll("phase A's live updates sent", lambda: live_sent(pool, tenant))
                pending_a = [r for r in await outbox(pool, tenant) if r["sent_at"] is None]
                # Each order's events (accepted, fill) for Kafka, all committed, none sent.
                assert {r["destination"] for r in pending_a} == {"kafka"}
                assert {r["partition_key"] for r in pending_a} == orders_a
                assert len(pending_a) >= 4 * 2
                await execution.kill()
                kafka_proxy.cut()  # what the dead process sent never reaches the broker
                kafka_proxy.release()
                assert [r["id"] for r in await outbox(pool, tenant) if r["sent_at"] is None] == [
                    r["id"] for r in pending_a
                ], "the kill must leave the committed rows pending"
                assert not set((await log()).copies()) & {r["event_id"] for r in pending_a}, (
                    "nothing of phase A may reach Kafka before the restart"
                )

                await execution.start()
                await poll("phase A published after the restart", lambda: all_sent(pool, tenant))
                copies = (await log()).copies()
                for row in pending_a:
                    if row["destination"] == "kafka":
                        assert copies[row["event_id"]] == [bytes(row["envelope"])], "exactly once"

                # ---- B: SIGKILL after the publish, before the rows are marked sent.
                kafka_proxy.hold()
                orders_b = set(await place(4))
                await poll("the relay's publish held in the Kafka proxy", publish_held)
                await poll("phase B's live updates sent", lambda: live_sent(pool, tenant))
                pending_rows_b = [r for r in await outbox(pool, tenant) if r["sent_at"] is None]
                assert {r["destination"] for r in pending_rows_b} == {"kafka"}
                assert {r["partition_key"] for r in pending_rows_b} == orders_b
                pending_b = {r["event_id"] for r in pending_rows_b}

                def hold_postgres_on_produce(chunk: bytes) -> None:
                    if kafka_api_key(chunk) == PRODUCE:
                        pg_proxy.hold()

                kafka_proxy.on_forward = hold_postgres_on_produce
                kafka_proxy.release()

                async def some_b_published() -> bool:
                    return bool(set((await log()).copies()) & pending_b)

                await poll("phase B events on Kafka", some_b_published)
                assert pg_proxy.held
                await execution.kill()
                kafka_proxy.on_forward = None
                kafka_proxy.cut()
                pg_proxy.cut()  # the relay's held "mark sent" dies with its connection
                pg_proxy.release()
                before_restart = {e: len(c) for e, c in (await log()).copies().items()}
                assert pending_b & set(before_restart), "the kill must come after a publish"
                still_pending = {r["event_id"] for r in await outbox(pool, tenant) if r["sent_at"] is None}
                assert still_pending == pending_b, "published rows must not be marked sent"

                await execution.start()
                await poll("phase B republished after the restart", lambda: all_sent(pool, tenant))

                # ---- What consumers see.
                rows = await outbox(pool, tenant)
                kafka_rows = {
                    r["event_id"]: bytes(r["envelope"]) for r in rows if r["destination"] == "kafka"
                }
                nats_rows = {r["event_id"] for r in rows if r["destination"] == "nats"}
                final = await log()
                copies = final.copies()
                # Nothing lost, nothing invented.
                assert set(copies) == set(kafka_rows)
                for event_id, raws in copies.items():
                    # Every copy is the committed envelope itself (same event id, same bytes).
                    assert set(raws) == {kafka_rows[event_id]}
                    if event_id in pending_b:
                        # The restarted relay published each pending row once more: on top of
                        # what the killed one had published (several copies if its Produce
                        # timed out while held and the producer sent it again).
                        assert len(raws) == before_restart.get(event_id, 0) + 1, event_id
                    else:
                        assert len(raws) == 1, f"{event_id}: exactly once"
                # Per topic, the first copies of each order's events arrive in commit order.
                registry = event_registry()
                for topic in TOPICS:
                    on_topic = [
                        r
                        for r in rows
                        if r["destination"] == "kafka"
                        and registry.route(r["event_type"]).kafka_topic == topic
                    ]
                    first = final.first_copies(topic)
                    for order_id in {r["partition_key"] for r in on_topic}:
                        committed = [r["event_id"] for r in on_topic if r["partition_key"] == order_id]
                        assert [e for e in first if e in committed] == committed
                # JetStream drops repeated Nats-Msg-Ids: each order update once.
                nats_ids = await nats_event_ids(infra_settings, tenant)
                assert set(nats_ids) == nats_rows and set(nats_ids.values()) == {1}

                # Portfolio applied each fill once: positions equal the sum of the fills.
                expected_qty = await _net_fills(pool, tenant)
                fill_count = await pool.fetchval(
                    "SELECT count(*) FROM execution.executions WHERE tenant_id = $1", tenant
                )
                assert fill_count == placed

                async def books_match() -> bool:
                    reply = await pf_grpc.PortfolioServiceStub(pf_channel).GetPositions(
                        pf.GetPositionsRequest(include_closed=True),
                        metadata=user_md("portfolio", tenant),
                        timeout=5,
                    )
                    held = {p.symbol: Decimal(p.quantity.value) for p in reply.positions}
                    return held == expected_qty

                await poll("portfolio positions equal the sum of the fills", books_match)
                assert (
                    await pool.fetchval(
                        "SELECT count(*) FROM portfolio.processed_events WHERE tenant_id = $1", tenant
                    )
                    == placed
                )
    finally:
        if execution is not None:
            await execution.stop()
        await asyncio.to_thread(tansu.stop)
        await redis.aclose()


async def _net_fills(pool: asyncpg.Pool, tenant: str) -> dict[str, Decimal]:
    rows = await pool.fetch(
        """SELECT o.symbol, sum(CASE WHEN o.side = 1 THEN e.quantity ELSE -e.quantity END) AS qty
           FROM execution.executions e JOIN execution.orders o USING (tenant_id, order_id)
           WHERE e.tenant_id = $1 GROUP BY o.symbol""",
        tenant,
    )
    return {r["symbol"]: Decimal(r["qty"]) for r in rows}
