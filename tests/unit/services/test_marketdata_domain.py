"""Tick normalisation: every reject reason, table-driven, and what acceptance
does to the per-symbol order. No servers."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import protovalidate
import pytest
from trading.marketdata.v1 import events_pb2

from services.marketdata.domain import Normalizer, RawTick, Rejection, RejectReason, quote_of

D = Decimal
T0 = 1_717_425_000_000_000_000  # 2024-06-03 14:30 UTC in ns
GOOD = RawTick("BTC-USD", D("100.5"), D("2"), D("100.6"), D("3"), D("100.5"), D("0.5"), T0, 10, "test")


def _raw(**changes: object) -> RawTick:
    return dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]


def _normalizer() -> Normalizer:
    n = Normalizer({"BTC-USD", "ETH-USD"})
    # Prime BTC-USD with sequence 10 at T0.
    assert isinstance(n.normalize(GOOD, T0 + 1), events_pb2.Tick)
    return n


CASES: list[tuple[str, RawTick, RejectReason, str]] = [
    ("crossed", _raw(sequence=11, bid_price=D("100.7")), RejectReason.CROSSED_BOOK, "bid 100.7 >= ask 100.6"),
    ("locked", _raw(sequence=11, bid_price=D("100.6")), RejectReason.CROSSED_BOOK, ">="),
    ("zero bid", _raw(sequence=11, bid_price=D("0")), RejectReason.NON_POSITIVE_PRICE, "must be positive"),
    (
        "negative ask",
        _raw(sequence=11, bid_price=D("-2"), ask_price=D("-1")),
        RejectReason.NON_POSITIVE_PRICE,
        "",
    ),
    (
        "trade at zero",
        _raw(sequence=11, last_price=D("0"), last_size=D("1")),
        RejectReason.NON_POSITIVE_PRICE,
        "last price",
    ),
    ("zero bid size", _raw(sequence=11, bid_size=D("0")), RejectReason.MALFORMED, "sizes must be positive"),
    (
        "negative ask size",
        _raw(sequence=11, ask_size=D("-1")),
        RejectReason.MALFORMED,
        "sizes must be positive",
    ),
    ("negative last size", _raw(sequence=11, last_size=D("-1")), RejectReason.MALFORMED, "negative"),
    ("no ask", _raw(sequence=11, ask_price=None), RejectReason.MALFORMED, "required"),
    ("NaN", _raw(sequence=11, bid_price=D("NaN")), RejectReason.MALFORMED, "finite"),
    ("parse error", _raw(sequence=11, error="unparsable row: x"), RejectReason.MALFORMED, "unparsable"),
    ("negative sequence", _raw(sequence=-1), RejectReason.MALFORMED, "unsigned"),
    ("unknown symbol", _raw(symbol="DOGE-USD", sequence=1), RejectReason.UNKNOWN_SYMBOL, "DOGE-USD"),
    ("repeated sequence", _raw(sequence=10), RejectReason.OUT_OF_ORDER, "sequence 10 <= last accepted 10"),
    ("older sequence", _raw(sequence=9), RejectReason.OUT_OF_ORDER, "<= last accepted 10"),
    (
        "time backwards",
        _raw(sequence=11, exchange_time_ns=T0 - 1),
        RejectReason.OUT_OF_ORDER,
        "exchange time",
    ),
]


@pytest.mark.parametrize(("raw", "reason", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_updates_are_rejected_with_their_reason(raw: RawTick, reason: RejectReason, detail: str) -> None:
    normalizer = _normalizer()
    result = normalizer.normalize(raw, T0 + 5)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert detail in result.detail
    assert result.last_accepted_sequence == (10 if reason is RejectReason.OUT_OF_ORDER else 0)
    event = result.to_event(T0 + 6)
    assert event.reason == int(reason) and event.symbol == raw.symbol and event.source == "test"
    assert event.rejected_at.ToNanoseconds() == T0 + 6
    protovalidate.validate(event)
    # A rejection does not move the bar: the next good tick is accepted.
    assert isinstance(
        normalizer.normalize(_raw(sequence=11, exchange_time_ns=T0 + 10), T0 + 11), events_pb2.Tick
    )


def test_accepted_tick_is_the_contract_form_and_advances_the_order() -> None:
    normalizer = Normalizer({"BTC-USD"})
    tick = normalizer.normalize(_raw(bid_size=D("2.500")), T0 + 7)
    assert isinstance(tick, events_pb2.Tick)
    protovalidate.validate(tick)
    assert (tick.bid_price.value, tick.bid_size.value, tick.ask_price.value, tick.last_size.value) == (
        "100.5",
        "2.5",
        "100.6",
        "0.5",
    )
    assert tick.exchange_time.ToNanoseconds() == T0 and tick.receive_time.ToNanoseconds() == T0 + 7
    assert (tick.sequence, tick.source) == (10, "test")
    assert normalizer.last_sequence("BTC-USD") == 10
    # Same exchange time is fine, a higher sequence is required.
    assert isinstance(normalizer.normalize(_raw(sequence=11), T0 + 8), events_pb2.Tick)
    # Symbols are ordered independently.
    other = Normalizer({"BTC-USD", "ETH-USD"})
    assert isinstance(other.normalize(_raw(sequence=50), T0), events_pb2.Tick)
    assert isinstance(other.normalize(_raw(symbol="ETH-USD", sequence=1), T0), events_pb2.Tick)


def test_quote_only_update_has_no_trade_and_quote_shares_the_fields() -> None:
    tick = Normalizer({"BTC-USD"}).normalize(_raw(last_price=None, last_size=None), T0)
    assert isinstance(tick, events_pb2.Tick)
    assert not tick.HasField("last_price") and not tick.HasField("last_size")
    quote = quote_of(tick)
    assert (quote.symbol, quote.bid_price.value, quote.ask_size.value, quote.sequence, quote.source) == (
        "BTC-USD",
        "100.5",
        "3",
        10,
        "test",
    )
    assert quote.exchange_time == tick.exchange_time and quote.receive_time == tick.receive_time


# ---------------------------------------------------------------- ticks in batches


def test_shares_of_the_partitions_see_every_symbol_exactly_once() -> None:
    """features started as 0/2 and 1/2 (or 0/3 .. 2/3) take every symbol's
    ticks, each symbol's in one process only; the partition of a symbol is
    the same in every process (not Python's salted hash)."""
    from services.marketdata.domain import TICK_PARTITIONS, partition_of, partitions_of_share

    symbols = [f"S{i}-USD" for i in range(200)] + ["BTC-USD", "ETH-USD", "AAPL", "EUR-USD"]
    assert partition_of("BTC-USD") == 1 and partition_of("ETH-USD") == 5  # FNV-1a, fixed
    for shares in (1, 2, 3, 16):
        taken = [partitions_of_share(i, shares) for i in range(shares)]
        seen = [s for share in taken for s in symbols if partition_of(s) in share]
        assert sorted(seen) == sorted(symbols)
    assert len({partition_of(s) for s in symbols}) == TICK_PARTITIONS  # all partitions used
    with pytest.raises(ValueError):
        partitions_of_share(2, 2)


def test_a_feed_batch_becomes_one_tick_batch_per_partition_in_feed_order() -> None:
    from services.marketdata.domain import partition_of, tick_batches

    n = Normalizer({"BTC-USD", "ETH-USD", "DOT-USD"})  # BTC-USD and DOT-USD share partition 1
    raws = [
        _raw(symbol=s, sequence=q)
        for q, s in enumerate(["BTC-USD", "ETH-USD", "DOT-USD", "BTC-USD", "ETH-USD"], start=1)
    ]
    ticks = [n.normalize(r, T0 + 1) for r in raws]
    assert all(isinstance(t, events_pb2.Tick) for t in ticks)
    batches = tick_batches((f"id-{i}", t) for i, t in enumerate(ticks))  # type: ignore[misc]
    assert [(b.partition, [t.symbol for t in b.ticks], list(b.tick_event_ids)) for b in batches] == [
        (1, ["BTC-USD", "DOT-USD", "BTC-USD"], ["id-0", "id-2", "id-3"]),
        (5, ["ETH-USD", "ETH-USD"], ["id-1", "id-4"]),
    ]
    assert partition_of("DOT-USD") == 1
    for b in batches:
        protovalidate.validate(b)
