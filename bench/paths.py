"""One function per path of the target table (bench.targets).

Each returns one or more :class:`bench.model.Result`: measured against the
running platform and real servers, or an explicit "not built yet" naming the
issue that builds it. A path added later replaces its ``not_built`` entry in
:func:`all_paths` with a measuring function; nothing else changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from aiokafka import AIOKafkaConsumer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NatsClient
from trading.common.v1 import decimal_pb2
from trading.marketdata.v1 import events_pb2 as md_events
from trading.marketdata.v1 import marketdata_service_pb2, marketdata_service_pb2_grpc

from bench import hotpaths, orders
from bench.context import Context, as_user, channel, user_context
from bench.harness import OpenLoopResult, OpenLoopTracker, closed_loop, open_loop
from bench.model import Result, errored, from_open_loop, measured
from runtime.config import ClickHouseSettings
from runtime.context import use_context
from runtime.contracts import event_registry
from runtime.grpc_client import ClientFactory
from runtime.messaging import Delivery, Event, Transport, new_envelope
from runtime.messaging.consuming import decode
from runtime.messaging.headers import from_kafka
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber, dlq_topic, ensure_topics
from runtime.messaging.nats import (
    JetStreamSubscriber,
    NatsPublisher,
    NatsSubscriber,
    StreamSpec,
    ensure_streams,
)
from runtime.messaging.nats.connect import connect_nats
from runtime.security.nats_permissions import HARNESS
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from runtime.storage.postgres import create_pool
from runtime.storage.redis import tenant_key

TENANT = "bench"
MARKETDATA_SCOPES = ("marketdata:read",)
TICK_TYPE = md_events.Tick.DESCRIPTOR.full_name
# The instrument universe marketdata seeds (services/marketdata/migrations).
SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD", "AAPL", "MSFT", "NVDA", "SPY")

PathFn = Callable[[Context], Awaitable[list[Result]]]


def _timed(started: float) -> float:
    return round(time.monotonic() - started, 2)


# ------------------------------------------------------------------------------ gRPC paths


async def health_check(ctx: Context) -> list[Result]:
    """grpc.health.v1 Check of marketdata on a long-lived channel, as an
    orchestrator probes (mutual TLS, as the operator, like ``./dev run``)."""
    started = time.monotonic()
    async with channel(ctx.stack.settings, "marketdata", principal="operator") as health_channel:
        stub = health_pb2_grpc.HealthStub(health_channel)
        request = health_pb2.HealthCheckRequest(service="")

        async def call() -> None:
            reply = await stub.Check(request, timeout=2)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError(f"marketdata not SERVING: {reply.status}")

        rec = await closed_loop(call, samples=ctx.mode.samples, warmup=ctx.mode.warmup)
    return [
        measured(
            "health_check", "health_check", "grpc.health.v1 Check (marketdata process)", rec,
            method="closed loop, 1 mutual-TLS channel", floor="floor_grpc", duration_s=_timed(started),
        )
    ]  # fmt: skip


async def service_call(ctx: Context) -> list[Result]:
    """marketdata.GetInstrument (a PostgreSQL read behind it) from another
    process, through the platform's client factory as the gateway acting for a
    user (context token, deadline, breaker, retry policy, metrics,
    OpenTelemetry interceptors, mutual TLS), and the same call on a bare
    mutual-TLS channel with a minted token to show what the client stack costs."""
    settings = ctx.stack.settings
    results: list[Result] = []
    symbols = itertools.cycle(SYMBOLS)

    started = time.monotonic()
    clients = ClientFactory(settings, principal="gateway")
    try:
        stub = clients.stub(marketdata_service_pb2_grpc.MarketDataServiceStub, "marketdata")

        async def via_factory() -> None:
            req = marketdata_service_pb2.GetInstrumentRequest(symbol=next(symbols))
            await stub.GetInstrument(req)

        # The factory's interceptor mints the context token from the user's context.
        with use_context(user_context(TENANT, MARKETDATA_SCOPES)):
            rec = await closed_loop(via_factory, samples=ctx.mode.samples, warmup=ctx.mode.warmup)
    finally:
        await clients.close()
    results.append(
        measured(
            "service_call", "service_call",
            "marketdata.GetInstrument via runtime.grpc_client.ClientFactory (PostgreSQL read behind it)",
            rec, method="closed loop, 1 pooled channel", floor="floor_grpc", duration_s=_timed(started),
            notes="Full client stack: context token (minted from the request context, cached), "
            "deadline, circuit breaker, retry policy, Prometheus metrics, OpenTelemetry interceptors "
            "(no exporter configured), mutual TLS. Server side: caller check and context-token "
            "verification (cached), validation, server interceptors, asyncpg point read.",
        )
    )  # fmt: skip

    started = time.monotonic()
    async with channel(settings, "marketdata") as bare_channel:
        bare = marketdata_service_pb2_grpc.MarketDataServiceStub(bare_channel)

        async def via_bare_channel() -> None:
            req = marketdata_service_pb2.GetInstrumentRequest(symbol=next(symbols))
            md = as_user(settings, "marketdata", TENANT, MARKETDATA_SCOPES)
            await bare.GetInstrument(req, metadata=md, timeout=2)

        rec = await closed_loop(via_bare_channel, samples=ctx.mode.samples, warmup=ctx.mode.warmup)
    results.append(
        measured(
            "service_call_bare_client", "service_call",
            "marketdata.GetInstrument on a bare mutual-TLS grpc.aio channel (no client interceptors)",
            rec, method="closed loop, 1 channel", floor="floor_grpc", duration_s=_timed(started),
            notes="Same server work as above; the difference is the client-side stack (the "
            "context token is minted per call here too, from the minting cache).",
        )
    )  # fmt: skip
    return results


async def vector_search(ctx: Context) -> list[Result]:
    """k = 32 nearest market states through decision's vector store adapter
    (pgvector, the platform's own), over 100,000 states (20,000 in quick mode);
    bench/vectors.py has the 1M run and the build rates."""
    from bench.vectors import in_platform

    size = 20_000 if ctx.mode.name == "quick" else 100_000
    started = time.monotonic()
    rec, facts = await in_platform(
        ctx.stack.settings, size=size, samples=ctx.mode.samples, warmup=ctx.mode.warmup
    )
    return [
        measured(
            "vector_search", "vector_search",
            f"k-nearest-neighbour search (k=32) over {size:,} market states, pgvector HNSW", rec,
            method="closed loop through runtime.vectors.pgvector as decision (row-level security)",
            extra=facts, duration_s=_timed(started), floor="floor_tcp",
            notes=f"recall@32 against exact search: {facts['recall_at_32']}; 40-dimensional states of the"
            " regime feed (services/decision/domain/embedding.py), loaded under a scope of their own.",
        )
    ]  # fmt: skip


# ------------------------------------------------------------------------------ event delivery


def _tick(index: int, marker: str) -> tuple[Any, md_events.Tick]:
    """A real Tick envelope; `sequence` carries the open-loop message index."""
    tick = md_events.Tick(
        symbol=SYMBOLS[index % len(SYMBOLS)],
        bid_price=decimal_pb2.Decimal(value="64250.25"),
        bid_size=decimal_pb2.Decimal(value="0.75"),
        ask_price=decimal_pb2.Decimal(value="64250.5"),
        ask_size=decimal_pb2.Decimal(value="1.2"),
        last_price=decimal_pb2.Decimal(value="64250.5"),
        last_size=decimal_pb2.Decimal(value="0.01"),
        sequence=index,
        source=marker,
    )
    now_ns = time.time_ns()
    tick.exchange_time.FromNanoseconds(now_ns)
    tick.receive_time.FromNanoseconds(now_ns)
    envelope = new_envelope(tick, tenant_id=TENANT, correlation_id=f"{marker}-{index}", producer="bench")
    return envelope, tick


def _handler(tracker: OpenLoopTracker, marker: str) -> Callable[[Event], Awaitable[None]]:
    async def handle(event: Event) -> None:
        tick = event.payload
        assert isinstance(tick, md_events.Tick)
        if tick.source == marker:
            tracker.complete(tick.sequence)

    return handle


class _Spawner:
    """Starts sends that wait for a broker ack without blocking the sender."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    def spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                self.failures += 1

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def _nats_connect(ctx: Context) -> NatsClient:
    # Invented subjects and streams: the benchmark's harness user.
    return await connect_nats(ctx.stack.settings, HARNESS, connect_timeout=2)


async def event_nats_core(ctx: Context) -> list[Result]:
    """Core NATS publish -> NatsSubscriber handler (how ticks fan out on the hot path)."""
    registry = event_registry()
    prefix = f"bench{ctx.run_id}."
    marker = f"bench-{ctx.run_id}-core"
    tracker = OpenLoopTracker(warmup=ctx.mode.event_warmup)
    pub_nc, sub_nc = await _nats_connect(ctx), await _nats_connect(ctx)
    try:
        subscriber = NatsSubscriber(
            sub_nc, registry, _handler(tracker, marker), event_types=[TICK_TYPE],
            subject_prefix=prefix, name=f"bench_{ctx.run_id}_core",
        )  # fmt: skip
        publisher = NatsPublisher(pub_nc, registry, subject_prefix=prefix)
        async with subscriber:
            await sub_nc.flush()

            async def send(i: int) -> None:
                envelope, tick = _tick(i, marker)
                await publisher.publish(envelope, payload=tick)  # core: returns once buffered

            run = await open_loop(
                send, tracker, count=ctx.mode.event_count, rate_per_s=ctx.mode.event_rate_per_s
            )
    finally:
        await pub_nc.close()
        await sub_nc.close()
    return [
        from_open_loop(
            "event_nats_core", "event_nats",
            "NATS core: NatsPublisher.publish -> NatsSubscriber handler (Tick envelope)", run,
            floor="floor_nats",
            notes="One hop publisher -> server -> subscriber, separate connections; the floor is a "
            "request/reply round trip (two hops), so a multiple below 1 is expected.",
        )
    ]  # fmt: skip


async def event_nats_jetstream(ctx: Context) -> list[Result]:
    """JetStream publish (waits for the stream's ack) -> durable pull consumer
    -> handler, with the subscriber's default fetch batch (64) and with batch 1."""
    registry = event_registry()
    prefix = f"benchjs{ctx.run_id}."
    stream = f"BENCH_{ctx.run_id.upper()}"
    pub_nc, sub_nc = await _nats_connect(ctx), await _nats_connect(ctx)
    js = pub_nc.jetstream()
    results: list[Result] = []
    try:
        await ensure_streams(
            js, [StreamSpec(stream, (f"{prefix}marketdata.ticks.*",), "benchmark", max_age_s=3600)]
        )
        publisher = NatsPublisher(pub_nc, registry, subject_prefix=prefix, jetstream_event_types={TICK_TYPE})
        for batch in (_NATS_DEFAULT_BATCH, 1):
            marker = f"bench-{ctx.run_id}-js{batch}"
            tracker = OpenLoopTracker(warmup=ctx.mode.event_warmup)
            spawner = _Spawner()
            subscriber = JetStreamSubscriber(
                sub_nc, registry, _handler(tracker, marker), event_types=[TICK_TYPE], subject_prefix=prefix,
                durable=f"bench_{ctx.run_id}_b{batch}", stream=stream, ack_wait_s=10, batch=batch,
            )  # fmt: skip
            async with subscriber:

                async def send(i: int, marker: str = marker, spawner: _Spawner = spawner) -> None:
                    envelope, tick = _tick(i, marker)
                    spawner.spawn(publisher.publish(envelope, payload=tick))

                run = await open_loop(
                    send, tracker, count=ctx.mode.event_count, rate_per_s=ctx.mode.event_rate_per_s
                )
                await spawner.drain()
            if batch == _NATS_DEFAULT_BATCH:
                result = from_open_loop(
                    "event_nats_jetstream", "event_nats",
                    "NATS JetStream: publish (stream ack) -> NatsSubscriber durable pull consumer "
                    f"(default fetch batch {batch})", run, floor="floor_nats",
                    notes="File-backed stream; the handler runs once a fetch returns, and a fetch of "
                    f"{batch} returns when the batch is full or its 1 s timeout ends, so at 1,000 msg/s the "
                    "first message of a batch waits for the next ones.",
                )  # fmt: skip
            else:
                result = from_open_loop(
                    "event_nats_jetstream_batch1", "event_nats",
                    "NATS JetStream, diagnostic: the same with NatsSubscriber(batch=1)", run,
                    floor="floor_nats",
                    notes="Fetching one message at a time costs a pull-request round trip (and an ack) "
                    "per message; if that cannot keep up with the rate, a backlog builds up.",
                )  # fmt: skip
            result.extra["publish_failures"] = spawner.failures
            results.append(result)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await pub_nc.close()
        await sub_nc.close()
    return results


_NATS_DEFAULT_BATCH = 64


async def event_kafka(ctx: Context) -> list[Result]:
    """KafkaPublisher (acks=all, lz4, 1 ms linger) -> tansu -> KafkaSubscriber
    handler; then the same publisher to a plain aiokafka consumer with a
    short fetch wait, to show what the subscriber's fetch setting costs."""
    registry = event_registry()
    kafka = ctx.stack.settings.kafka
    prefix = f"bench{ctx.run_id}."
    topic = prefix + registry.route(TICK_TYPE).kafka_topic
    await ensure_topics(kafka, [topic, dlq_topic(topic)])
    publisher = KafkaPublisher(kafka, registry, topic_prefix=prefix, client_id="bench")
    await publisher.start()
    results: list[Result] = []
    try:
        marker = f"bench-{ctx.run_id}-kafka"
        tracker = OpenLoopTracker(warmup=ctx.mode.event_warmup)
        subscriber = KafkaSubscriber(
            kafka, registry, _handler(tracker, marker), group=f"bench-{ctx.run_id}",
            dead_letters=publisher, event_types=[TICK_TYPE], topic_prefix=prefix, client_id="bench",
        )  # fmt: skip
        async with subscriber:
            await subscriber.wait_assigned(20)
            run, failures = await _kafka_open_loop(ctx, publisher, tracker, marker)
        result = from_open_loop(
            "event_kafka", "event_kafka",
            "Kafka (tansu): KafkaPublisher -> KafkaSubscriber handler (Tick envelope)", run,
            floor="floor_tcp",
            notes=f"{kafka.default_partitions} partitions keyed by symbol, "
            f"at {ctx.mode.event_rate_per_s:g}/s. tansu stores on S3 (SeaweedFS): every produce request's "
            "batch per partition is an object, and each fetch that finds data lists the partition's objects "
            "and reads them one GET each, so a stream of small batches falls behind where a real Kafka reads "
            "a log segment. KafkaSubscriber "
            f"fetches with kafka.fetch_max_wait_ms ({kafka.fetch_max_wait_ms} ms; tansu answers a fetch only "
            "when that wait ends, not when data arrives).",
        )  # fmt: skip
        result.extra["publish_failures"] = failures
        results.append(result)

        marker = f"bench-{ctx.run_id}-kafka-tuned"
        tracker = OpenLoopTracker(warmup=ctx.mode.event_warmup)
        async with _TunedKafkaConsumer(ctx, topic, tracker, marker):
            run, failures = await _kafka_open_loop(ctx, publisher, tracker, marker)
        result = from_open_loop(
            "event_kafka_short_fetch_wait", "event_kafka",
            f"Kafka (tansu), diagnostic: KafkaPublisher -> aiokafka consumer with "
            f"fetch_max_wait_ms={_SHORT_FETCH_WAIT_MS} (envelope decoded)", run,
            floor="floor_tcp",
            notes="Not the platform's subscriber: a plain aiokafka consumer group member that decodes the "
            "envelope and commits per batch, as a check on the subscriber's own overhead.",
        )  # fmt: skip
        result.extra["publish_failures"] = failures
        results.append(result)
    finally:
        await publisher.close()
    return results


_SHORT_FETCH_WAIT_MS = 10


async def _kafka_open_loop(
    ctx: Context, publisher: KafkaPublisher, tracker: OpenLoopTracker, marker: str
) -> tuple[OpenLoopResult, int]:
    spawner = _Spawner()

    async def send(i: int) -> None:
        envelope, tick = _tick(i, marker)
        spawner.spawn(publisher.publish(envelope, payload=tick))

    run = await open_loop(
        send, tracker, count=ctx.mode.event_count, rate_per_s=ctx.mode.event_rate_per_s, drain_timeout_s=15
    )
    await spawner.drain()
    return run, spawner.failures


class _TunedKafkaConsumer:
    """A consumer group member with a short fetch wait, decoding envelopes
    like the platform's subscriber and committing after each batch."""

    def __init__(self, ctx: Context, topic: str, tracker: OpenLoopTracker, marker: str) -> None:
        kafka = ctx.stack.settings.kafka
        self._registry = event_registry()
        self._handle = _handler(tracker, marker)
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka.servers,
            client_id="bench",
            group_id=f"bench-{ctx.run_id}-short-wait",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=_SHORT_FETCH_WAIT_MS,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            rebalance_timeout_ms=kafka.rebalance_timeout_ms,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> _TunedKafkaConsumer:
        await self._consumer.start()
        async with asyncio.timeout(20):
            while not self._consumer.assignment():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            # Resolve "latest" now, so nothing published from here on is skipped.
            for tp in self._consumer.assignment():
                await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Let the loop finish its batch and commit: cancelling a commit in
        # flight makes aiokafka log a closed-connection error on stop.
        self._stopping = True
        if self._task is not None:
            await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        delivery = Delivery(Transport.KAFKA, "bench")
        while not self._stopping:
            batch = await self._consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                for record in records:
                    envelope, payload = decode(record.value or b"", self._registry)
                    await self._handle(Event(envelope, payload, from_kafka(record.headers), delivery))
                await self._consumer.commit({tp: records[-1].offset + 1})


# ------------------------------------------------------------------------------ storage


_ORDERS_DDL = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE bench.orders (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL,
    client_order_id text NOT NULL,
    symbol          text NOT NULL,
    side            text NOT NULL,
    quantity        numeric(30, 12) NOT NULL,
    limit_price     numeric(30, 12),
    status          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, client_order_id)
);
INSERT INTO bench.orders (tenant_id, client_order_id, symbol, side, quantity, limit_price, status)
SELECT 'tenant-' || (g % 50), 'co-' || g, (ARRAY['BTC-USD','ETH-USD','SOL-USD','AAPL'])[1 + g % 4],
       CASE WHEN g % 2 = 0 THEN 'BUY' ELSE 'SELL' END, 0.01 * (1 + g % 100), 100 + (g % 1000) * 0.25, 'FILLED'
FROM generate_series(1, 100000) AS g;
ANALYZE bench.orders;
"""


async def postgres_oltp(ctx: Context) -> list[Result]:
    """An indexed point select and a single-row insert (autocommit) through
    the platform's asyncpg pool, on a 100,000-row orders-like table."""
    pool = await create_pool(ctx.stack.settings.postgres, application_name="bench", min_size=1, max_size=2)
    results: list[Result] = []
    try:
        await pool.execute(_ORDERS_DDL)
        facts = {
            name: await pool.fetchval(f"SHOW {name}")
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }
        rng = random.Random(7)
        started = time.monotonic()

        async def point_select() -> None:
            g = rng.randint(1, 100_000)
            row = await pool.fetchrow(
                "SELECT id, symbol, side, quantity, limit_price, status, created_at FROM bench.orders "
                "WHERE tenant_id = $1 AND client_order_id = $2",
                f"tenant-{g % 50}",
                f"co-{g}",
            )
            if row is None:
                raise RuntimeError("point select found nothing")

        rec = await closed_loop(point_select, samples=ctx.mode.samples, warmup=ctx.mode.warmup)
        results.append(
            measured(
                "postgres_select", "postgres",
                "indexed point select (unique (tenant_id, client_order_id)) via asyncpg pool", rec,
                method="closed loop, pool of 2", floor="floor_tcp", extra=facts, duration_s=_timed(started),
                notes="100,000-row table; each call acquires a pooled connection, as a service handler does.",
            )
        )  # fmt: skip

        counter = itertools.count()
        started = time.monotonic()

        async def insert() -> None:
            n = next(counter)
            await pool.execute(
                "INSERT INTO bench.orders (tenant_id, client_order_id, symbol, side, quantity, limit_price,"
                " status) VALUES ($1, $2, $3, 'BUY', $4::numeric, $5::numeric, 'NEW')",
                "tenant-bench", f"ins-{ctx.run_id}-{n}", SYMBOLS[n % len(SYMBOLS)], "0.01", "64250.5",
            )  # fmt: skip

        rec = await closed_loop(insert, samples=ctx.mode.samples, warmup=ctx.mode.warmup)
        results.append(
            measured(
                "postgres_insert", "postgres", "single-row INSERT, autocommit (one transaction each)", rec,
                method="closed loop, pool of 2", floor="floor_tcp", extra=facts, duration_s=_timed(started),
                notes=f"Commit cost depends on synchronous_commit={facts['synchronous_commit']}, "
                f"fsync={facts['fsync']} of the shared server.",
            )
        )  # fmt: skip
    finally:
        await pool.close()
    return results


async def cache_access(ctx: Context) -> list[Result]:
    """Redis GET and SET of a cached last quote (a ~150-byte protobuf) with a tenant-scoped key."""
    client = open_redis(ctx.stack.settings, REDIS_ADMIN)
    tenant = f"bench{ctx.run_id}"
    keys = [tenant_key(tenant, "quote", s) for s in SYMBOLS]
    values = {k: _tick(i, "cache")[1].SerializeToString() for i, k in enumerate(keys)}
    results: list[Result] = []
    try:
        for k, v in values.items():
            await client.set(k, v)
        info = await client.info("server")
        facts = {"redis_version": info.get("redis_version", "?")}
        key_cycle = itertools.cycle(keys)

        started = time.monotonic()

        async def get() -> None:
            if await client.get(next(key_cycle)) is None:
                raise RuntimeError("cache miss")

        rec = await closed_loop(get, samples=ctx.mode.samples, warmup=ctx.mode.warmup)
        results.append(
            measured(
                "cache_get", "cache", "Redis GET of a cached quote (redis.asyncio pool)", rec,
                method="closed loop, 1 client", floor="floor_tcp", extra=facts, duration_s=_timed(started),
            )
        )  # fmt: skip

        started = time.monotonic()

        async def set_() -> None:
            k = next(key_cycle)
            await client.set(k, values[k], ex=300)

        rec = await closed_loop(set_, samples=ctx.mode.samples, warmup=ctx.mode.warmup)
        results.append(
            measured(
                "cache_set", "cache", "Redis SET with TTL of a cached quote", rec,
                method="closed loop, 1 client", floor="floor_tcp", extra=facts, duration_s=_timed(started),
            )
        )  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            await client.delete(*keys)
        await client.aclose()
    return results


# ------------------------------------------------------------------------------ ClickHouse

_SYMBOL_COUNT = 20
_DAYS = 5
_FIRST_DATE = date(2026, 1, 5)

_TICKS_DDL = """
CREATE TABLE ticks (
    symbol LowCardinality(String),
    ts     DateTime64(6, 'UTC'),
    price  Decimal64(8),
    size   Decimal64(8)
) ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (symbol, ts)
"""

_BARS_SQL = """
SELECT toStartOfMinute(ts) AS minute,
       argMin(price, ts) AS open, max(price) AS high, min(price) AS low, argMax(price, ts) AS close,
       sum(size) AS volume, count() AS trades
FROM ticks
WHERE symbol = {symbol:String}
  AND ts >= {start:DateTime64(6, 'UTC')} AND ts < {start:DateTime64(6, 'UTC')} + INTERVAL 1 DAY
GROUP BY minute
ORDER BY minute
"""

_SCAN_SQL = """
SELECT symbol, toDate(ts) AS day,
       argMin(price, ts) AS open, max(price) AS high, min(price) AS low, argMax(price, ts) AS close,
       sum(size) AS volume, count() AS trades
FROM ticks
GROUP BY symbol, day
ORDER BY symbol, day
"""


async def clickhouse_analytics(ctx: Context) -> list[Result]:
    """GetBars' own query (services.analytics.adapters.clickhouse: its schema, its
    materialized bar views, its SQL): 1-minute OHLCV bars of one symbol over
    one day, over ticks generated into the analytics tick table in chdb (the
    embedded ClickHouse engine: no network hop); plus a full scan of the raw
    tick table as the worst case."""
    # Imported here: the analytics service is only needed by this path.
    import calendar

    from services.analytics import domain as analytics_domain
    from services.analytics.adapters.clickhouse import ClickHouseAnalyticsStore
    from services.analytics.ports import TICKS
    from services.analytics.settings import AnalyticsSettings

    settings = ClickHouseSettings(url="", chdb_path=ctx.work_dir / "chdb-bench", database="bench")
    store = ClickHouseAnalyticsStore(
        settings, AnalyticsSettings(query_timeout_s=30.0), database="bench_analytics"
    )
    results: list[Result] = []
    try:
        ch = await store.client()  # creates the analytics schema
        for table in (TICKS, "analytics_bars_1s", "analytics_bars_1m", "analytics_bars_1h"):
            await ch.command(f"TRUNCATE TABLE {table}")
        started = time.monotonic()
        n = ctx.mode.ch_ticks
        per_symbol = max(1, n // _SYMBOL_COUNT)
        step_ns = _DAYS * 86_400 * 1_000_000_000 // per_symbol
        first_s = calendar.timegm(_FIRST_DATE.timetuple())
        # Rows generated inside ClickHouse (none cross the client); the bar
        # views aggregate them on the way in, as they do for the Kafka sink.
        await ch.command(f"""
INSERT INTO {TICKS} (event_id, symbol, source, sequence, exchange_time, receive_time,
                     bid_price, bid_size, ask_price, ask_size, last_price, last_size)
SELECT toString(generateUUIDv4()) AS event_id,
       concat('SYM', toString(number % {_SYMBOL_COUNT})) AS symbol,
       'bench' AS source,
       intDiv(number, {_SYMBOL_COUNT}) + 1 AS sequence,
       fromUnixTimestamp64Nano(toInt64({first_s * 1_000_000_000}
           + intDiv(number, {_SYMBOL_COUNT}) * {step_ns}), 'UTC') AS exchange_time,
       exchange_time AS receive_time,
       toDecimal128(price - 0.01, 12) AS bid_price, toDecimal128(1, 12) AS bid_size,
       toDecimal128(price + 0.01, 12) AS ask_price, toDecimal128(1, 12) AS ask_size,
       toDecimal128(price, 12) AS last_price,
       toDecimal128((cityHash64(number, 1) % 100000) / 1000.0 + 0.001, 12) AS last_size
FROM (SELECT number,
             100 + (number % {_SYMBOL_COUNT}) * 10 + 5 * sin(intDiv(number, {_SYMBOL_COUNT}) / 5000)
                 + (cityHash64(number) % 10000) / 10000.0 AS price
      FROM numbers({n}))""")
        generate_s = round(time.monotonic() - started, 2)
        rows = int((await ch.query(f"SELECT count() FROM {TICKS}")).rows[0][0])
        version = str((await ch.query("SELECT version()")).rows[0][0])
        facts: dict[str, Any] = {
            "ticks": rows, "symbols": _SYMBOL_COUNT, "days": _DAYS,
            "ticks_per_symbol_day": rows // (_SYMBOL_COUNT * _DAYS),
            "generate_s": generate_s, "clickhouse_version": version,
        }  # fmt: skip
        rng = random.Random(11)
        bars_seen: list[int] = []
        plan = analytics_domain.plan_of(2)  # BAR_INTERVAL_ONE_MINUTE

        async def bars() -> None:
            day_s = first_s + 86_400 * rng.randrange(_DAYS)
            lo, hi = analytics_domain.bar_window(
                day_s * 1_000_000_000, (day_s + 86_400) * 1_000_000_000, plan.step_s
            )
            out, _ = await store.bars(f"SYM{rng.randrange(_SYMBOL_COUNT)}", plan, lo, hi, 10_000, 30.0)
            bars_seen.append(len(out))

        started = time.monotonic()
        rec = await closed_loop(bars, samples=ctx.mode.ch_samples, warmup=3)
        facts_bars = {**facts, "bars_per_query_min": min(bars_seen), "bars_per_query_max": max(bars_seen)}
        label = f"{rows / 1e6:g} million" if rows >= 1_000_000 else f"{rows:,}"
        results.append(
            measured(
                "clickhouse_bars", "clickhouse",
                f"GetBars' query: 1-minute OHLCV bars, one symbol, one day, over {label} ticks (chdb)", rec,
                method="closed loop through"
                " services.analytics.adapters.clickhouse.ClickHouseAnalyticsStore.bars (worker thread)",
                extra=facts_bars, duration_s=_timed(started),
                notes="The analytics service's own schema and SQL: minute bars pre-aggregated by a "
                "materialized view (AggregatingMergeTree ordered by symbol, bucket), merged at query "
                "time. chdb is embedded (no network hop, unlike a ClickHouse server).",
            )
        )  # fmt: skip

        started = time.monotonic()
        scan_sql = f"""
SELECT symbol, toDate(exchange_time) AS day,
       argMin(last_price, (exchange_time, sequence)) AS open, max(last_price) AS high,
       min(last_price) AS low, argMax(last_price, (exchange_time, sequence)) AS close,
       sum(last_size) AS volume, count() AS trades
FROM {TICKS}
GROUP BY symbol, day
ORDER BY symbol, day"""

        async def scan() -> None:
            await ch.query(scan_sql)

        rec = await closed_loop(scan, samples=ctx.mode.ch_scan_samples, warmup=1)
        results.append(
            measured(
                "clickhouse_scan", "clickhouse",
                f"daily OHLCV of every symbol: full scan of {label} raw ticks (chdb)", rec,
                method="closed loop through runtime.storage.clickhouse (worker thread)",
                extra=facts, duration_s=_timed(started),
                notes="Worst case: reads every row of the analytics tick table. "
                "Few samples: its p99 is its max.",
            )
        )  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            ch = await store.client()
            for table in (TICKS, "analytics_bars_1s", "analytics_bars_1m", "analytics_bars_1h"):
                await ch.command(f"TRUNCATE TABLE {table}")
        await store.close()
    return results


# ------------------------------------------------------------------------------ the table


def all_paths() -> list[tuple[str, PathFn]]:
    """(name, function) in run order (the report orders rows by the target
    table); each function may return several rows."""
    return [
        # Each measured idle and at 1,000 ticks/s (the feed restarted), then the feed back at its baseline.
        ("gateway call", orders.gateway_call),
        ("order placement", orders.order_placement),
        ("order throughput", orders.order_throughput),
        ("service-to-service call", service_call),
        ("JWT validation", hotpaths.jwt_validation),
        ("health check", health_check),
        ("event delivery: NATS core", event_nats_core),
        ("event delivery: NATS JetStream", event_nats_jetstream),
        ("event delivery: Kafka", event_kafka),
        ("PostgreSQL OLTP", postgres_oltp),
        ("ClickHouse analytics", clickhouse_analytics),
        ("cache access", cache_access),
        ("vector search", vector_search),
        # Last: they restart marketdata at other feed rates.
        ("hot path at 1,000 ticks/s", hotpaths.hot_path),
        ("tick throughput", hotpaths.tick_throughput),
    ]


async def run_path(name: str, fn: PathFn, ctx: Context) -> list[Result]:
    """Run one path function; an exception becomes an error row (the run then fails)."""
    # A hung path (a server gone, a lost message never re-sent) must not hang the run.
    limit_s = 180.0 if ctx.mode.name == "quick" else 600.0
    try:
        async with asyncio.timeout(limit_s):
            return await fn(ctx)
    except TimeoutError:
        return [errored(fn.__name__, "", name, f"no result within {limit_s:.0f} s")]
    except Exception as exc:
        return [errored(fn.__name__, "", name, exc)]
