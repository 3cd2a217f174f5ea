"""marketdata's feed path on real PostgreSQL, Redis, NATS and tansu: replayed
and synthetic ticks are normalised, published on NATS and Kafka, cached in
Redis, served by GetQuote and StreamQuotes; bad ticks are counted and
published as TickRejected, never as ticks.

Every test quotes its own instruments (unique symbols inserted into the
session database), so nothing it publishes or caches touches shared symbols.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
import grpc
import protovalidate
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from google.protobuf.duration_pb2 import Duration
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from trading.common.v1 import market_pb2
from trading.marketdata.v1 import events_pb2
from trading.marketdata.v1 import marketdata_service_pb2 as pb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as pb_grpc

from runtime.config import Settings
from runtime.errors import error_details
from runtime.messaging import decode_envelope
from runtime.messaging.headers import from_kafka
from runtime.messaging.nats.connect import connect_nats
from runtime.storage.migrations import migrate_pool
from services.marketdata.domain import TICK_PARTITIONS, RejectReason, partition_of
from services.marketdata.feeds import REPLAY_COLUMNS, FeedSettings
from services.marketdata.main import make_spec
from tests.support.security import service_channel, user_md
from tests.support.services import running_service


def tenant_md() -> tuple[tuple[str, str], ...]:
    return user_md("marketdata", "tenant-md-feed")


TICK = "trading.marketdata.v1.Tick"
REJECTED = "trading.marketdata.v1.TickRejected"
TICK_BATCH = "trading.marketdata.v1.TickBatch"


def _batch_size(msg: Msg) -> int:
    return len(events_pb2.TickBatch.FromString(decode_envelope(msg.data).payload.value).ticks)


T0 = 1_717_425_000_000_000_000


Instruments = Callable[[int], Awaitable[list[str]]]


@pytest_asyncio.fixture
async def instruments(pg_pool: asyncpg.Pool) -> AsyncIterator[Instruments]:
    """Creates fresh instruments with unique symbols; deletes them afterwards
    (other tests of the session count the seeded universe)."""
    created: list[str] = []

    async def create(n: int) -> list[str]:
        await migrate_pool(pg_pool, "marketdata")
        symbols = [f"T{uuid.uuid4().hex[:10].upper()}-USD" for _ in range(n)]
        await pg_pool.executemany(
            """INSERT INTO marketdata.instruments
               (symbol, base_asset, quote_asset, asset_class, tick_size, lot_size, min_quantity)
               VALUES ($1, $2, 'USD', 'CRYPTO', 0.01, 0.001, 0.001)""",
            [(s, s.split("-")[0]) for s in symbols],
        )
        created.extend(symbols)
        return symbols

    yield create
    await pg_pool.execute("DELETE FROM marketdata.instruments WHERE symbol = ANY($1::text[])", created)


async def _until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _kafka_records(
    settings: Settings, topic: str, keys: set[bytes], count: int, timeout: float = 20.0
) -> list[tuple[bytes, bytes, dict[str, str]]]:
    """The first `count` records of `topic` with one of `keys` (key, value, headers)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka.servers, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[tuple[bytes, bytes, dict[str, str]]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    if r.key in keys and r.value is not None:
                        out.append((r.key, r.value, from_kafka(r.headers)))
    finally:
        await consumer.stop()
    assert len(out) >= count, f"{topic}: {len(out)} of {count} records"
    return out


def _rejected(reason: RejectReason) -> float:
    return (
        REGISTRY.get_sample_value("trading_marketdata_ticks_rejected_total", {"reason": reason.label}) or 0.0
    )


def _write_csv(path: Path, rows: Sequence[Sequence[object]]) -> None:
    path.write_text("\n".join([",".join(REPLAY_COLUMNS), *(",".join(map(str, r)) for r in rows)]) + "\n")


async def test_replayed_ticks_are_published_cached_and_bad_ones_rejected(
    infra_settings: Settings, instruments: Instruments, tmp_path: Path
) -> None:
    a, b, quiet = await instruments(3)
    unknown = f"U{uuid.uuid4().hex[:10].upper()}-USD"
    rows = [
        # symbol, bid, bid size, ask, ask size, last, last size, time, sequence
        (a, "100.10", "2", "100.20", "3", "100.10", "0.5", T0, 1),
        (b, "50.00", "1", "50.05", "1", "", "", T0, 1),
        (a, "100.30", "2", "100.20", "3", "", "", T0 + 1, 2),  # crossed
        (a, "100.20", "2", "100.30", "3", "100.30", "1", T0 + 2, 3),
        (b, "-1", "1", "50.05", "1", "", "", T0 + 3, 2),  # non-positive price
        (unknown, "1", "1", "2", "1", "", "", T0 + 3, 1),  # unknown symbol
        (a, "100.20", "2", "100.30", "3", "", "", T0 + 4, 3),  # repeated sequence
        (b, "50.01", "4", "50.04", "5", "50.04", "2", T0 + 5, 3),
        (a, "abc", "2", "100.30", "3", "", "", T0 + 6, 4),  # malformed
        (a, "100.40", "1.5", "100.50", "2.5", "100.40", "0.25", T0 + 7, 5),
    ]
    path = tmp_path / "ticks.csv"
    _write_csv(path, rows)
    before = {r: _rejected(r) for r in RejectReason}

    # Per-tick subjects as the paper venue reads them, batches as features does.
    nc = await connect_nats(infra_settings, "execution")
    batches_nc = await connect_nats(infra_settings, "features")
    received: list[Msg] = []
    batches: list[Msg] = []

    async def collect(msg: Msg) -> None:
        received.append(msg)

    async def collect_batch(msg: Msg) -> None:
        batch = events_pb2.TickBatch.FromString(decode_envelope(msg.data).payload.value)
        if batch.ticks[0].symbol in (a, b, unknown):
            batches.append(msg)

    for symbol in (a, b, unknown):
        await nc.subscribe(f"marketdata.ticks.{symbol}", cb=collect)
    await batches_nc.subscribe("marketdata.tickbatches.*", cb=collect_batch)
    await nc.flush()
    await batches_nc.flush()
    spec = make_spec(FeedSettings(feed="replay", feed_file=path, feed_pace="fast"))
    try:
        async with (
            running_service(spec, infra_settings) as address,
            service_channel(address, "marketdata") as channel,
        ):
            keys = {a.encode(), b.encode(), unknown.encode()}
            rejects = await _kafka_records(infra_settings, "trading.marketdata.rejects", keys, 5)
            kafka_ticks = await _kafka_records(infra_settings, "trading.marketdata.ticks", keys, 5)
            # NATS publishes precede Kafka's in each batch: all are in by now.
            await _until(lambda: len(received) >= 5, what="ticks on NATS")

            # NATS: exactly the good ticks, on their symbol's subject, with envelope headers.
            nats_ticks: dict[str, events_pb2.Tick] = {}
            order: list[tuple[str, int]] = []
            for msg in received:
                envelope = decode_envelope(msg.data)
                tick = events_pb2.Tick.FromString(envelope.payload.value)
                assert msg.subject == f"marketdata.ticks.{tick.symbol}"
                assert msg.headers is not None
                assert msg.headers["x-event-type"] == TICK == envelope.event_type
                assert msg.headers["x-event-id"] == envelope.event_id
                assert msg.headers["content-type"] == "application/x-protobuf"
                assert envelope.producer == "marketdata" and envelope.tenant_id == ""
                protovalidate.validate(tick)
                nats_ticks[envelope.event_id] = tick
                order.append((tick.symbol, tick.sequence))
            assert sorted(order) == sorted([(a, 1), (a, 3), (a, 5), (b, 1), (b, 3)])
            assert [s for sym, s in order if sym == a] == [1, 3, 5]

            # The same ticks once more in TickBatches, on their symbol's
            # partition, each with its own Tick event's id.
            await _until(lambda: sum(_batch_size(m) for m in batches) >= 5, what="tick batches on NATS")
            in_batches: dict[str, events_pb2.Tick] = {}
            for msg in batches:
                envelope = decode_envelope(msg.data)
                assert envelope.event_type == TICK_BATCH and msg.headers is not None
                batch = events_pb2.TickBatch.FromString(envelope.payload.value)
                protovalidate.validate(batch)
                assert msg.subject == f"marketdata.tickbatches.{batch.partition}"
                assert batch.partition_count == TICK_PARTITIONS
                assert {partition_of(t.symbol) for t in batch.ticks} == {batch.partition}
                in_batches.update(zip(batch.tick_event_ids, batch.ticks, strict=True))
            assert in_batches == nats_ticks

            # Kafka: the same events, keyed by symbol, same headers.
            for key, value, headers in kafka_ticks:
                envelope = decode_envelope(value)
                assert envelope.event_id in nats_ticks and headers["x-event-id"] == envelope.event_id
                assert headers["x-event-type"] == TICK
                assert key.decode() == nats_ticks[envelope.event_id].symbol
            assert len({decode_envelope(v).event_id for _, v, _ in kafka_ticks}) == 5

            # Rejections: one per reason, on Kafka only, counted by reason.
            reasons: dict[int, events_pb2.TickRejected] = {}
            for key, value, headers in rejects:
                envelope = decode_envelope(value)
                assert headers["x-event-type"] == REJECTED == envelope.event_type
                event = events_pb2.TickRejected.FromString(envelope.payload.value)
                protovalidate.validate(event)
                assert key.decode() == event.symbol
                reasons[event.reason] = event
            assert set(reasons) == {int(r) for r in RejectReason}
            crossed = reasons[RejectReason.CROSSED_BOOK]
            assert (crossed.symbol, crossed.tick.sequence, crossed.detail) == (a, 2, "bid 100.3 >= ask 100.2")
            assert reasons[RejectReason.OUT_OF_ORDER].last_accepted_sequence == 3
            assert reasons[RejectReason.UNKNOWN_SYMBOL].symbol == unknown
            assert reasons[RejectReason.MALFORMED].source == "replay"
            for reason in RejectReason:
                assert _rejected(reason) - before[reason] == 1, reason

            # GetQuote is the last tick of the symbol (Tick and Quote share fields).
            stub = pb_grpc.MarketDataServiceStub(channel)
            last_a = next(t for t in nats_ticks.values() if (t.symbol, t.sequence) == (a, 5))
            quote = (await stub.GetQuote(pb.GetQuoteRequest(symbol=a), metadata=tenant_md())).quote
            assert quote == market_pb2.Quote.FromString(last_a.SerializeToString())
            assert (quote.bid_price.value, quote.ask_size.value, quote.last_price.value) == (
                "100.4",
                "2.5",
                "100.4",
            )

            with pytest.raises(grpc.aio.AioRpcError) as no_tick:
                await stub.GetQuote(pb.GetQuoteRequest(symbol=quiet), metadata=tenant_md())
            details = error_details(no_tick.value)
            assert details.code == grpc.StatusCode.UNAVAILABLE and details.retry_delay_s == 1.0
            assert details.error_info is not None and details.error_info.reason == "QUOTE_NOT_AVAILABLE"

            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetQuote(pb.GetQuoteRequest(symbol=unknown), metadata=tenant_md())
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await nc.close()
        await batches_nc.close()


async def _next(
    call: grpc.aio.UnaryStreamCall[pb.StreamQuotesRequest, pb.StreamQuotesResponse],
) -> pb.StreamQuotesResponse:
    async with asyncio.timeout(10):
        message = await call.read()
    assert isinstance(message, pb.StreamQuotesResponse)
    return message


def _streams() -> float:
    return REGISTRY.get_sample_value("trading_marketdata_quote_streams") or 0.0


async def test_stream_quotes_snapshot_then_live_conflated_and_clean_cancel(
    infra_settings: Settings, instruments: Instruments
) -> None:
    a, b = await instruments(2)
    spec = make_spec(FeedSettings(feed="synthetic", feed_rate=200, feed_symbols=[a, b], feed_seed=7))
    async with (
        running_service(spec, infra_settings) as address,
        service_channel(address, "marketdata") as channel,
    ):
        stub = pb_grpc.MarketDataServiceStub(channel)
        deadline = time.monotonic() + 15
        for symbol in (a, b):
            while True:
                try:
                    await stub.GetQuote(pb.GetQuoteRequest(symbol=symbol), metadata=tenant_md())
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
                    await asyncio.sleep(0.05)
        baseline = _streams()

        call = stub.StreamQuotes(pb.StreamQuotesRequest(symbols=[a, b]), metadata=tenant_md())
        snapshot = [await _next(call), await _next(call)]
        assert all(m.snapshot for m in snapshot)
        assert {m.quote.symbol for m in snapshot} == {a, b}
        floor = {m.quote.symbol: m.quote.sequence for m in snapshot}
        live = [await _next(call) for _ in range(10)]
        assert not any(m.snapshot for m in live)
        assert all(m.quote.sequence > floor[m.quote.symbol] for m in live)
        for symbol in (a, b):
            of_symbol = [m.quote.sequence for m in live if m.quote.symbol == symbol]
            assert of_symbol == sorted(of_symbol)
        assert {m.quote.source for m in live} == {"synthetic"}
        assert _streams() == baseline + 1
        call.cancel()
        # The server side ends: its subscriptions are dropped and the gauge falls back.
        await _until(lambda: _streams() == baseline, timeout=10, what="the stream to close")
        assert call.cancelled()

        # Conflation: ~100 updates/s of `a`, at most one per 250 ms.
        conflated = stub.StreamQuotes(
            pb.StreamQuotesRequest(
                symbols=[a], skip_snapshot=True, conflation_interval=Duration(nanos=250_000_000)
            ),
            metadata=tenant_md(),
        )
        arrivals: list[float] = []
        sequences: list[int] = []
        start = time.monotonic()
        while time.monotonic() - start < 1.3:
            message = await _next(conflated)
            assert not message.snapshot and message.quote.symbol == a
            arrivals.append(time.monotonic())
            sequences.append(message.quote.sequence)
        conflated.cancel()
        assert 3 <= len(arrivals) <= 7, arrivals
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert min(gaps) > 0.2, gaps
        # Each is the latest of its interval: far apart in sequence, not consecutive ticks.
        assert sequences == sorted(sequences) and min(y - x for x, y in itertools.pairwise(sequences)) > 5

        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            async for _ in stub.StreamQuotes(
                pb.StreamQuotesRequest(symbols=[a, "NOPE-USD"]), metadata=tenant_md()
            ):
                pass
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        await _until(lambda: _streams() == baseline, timeout=10, what="all streams to close")
