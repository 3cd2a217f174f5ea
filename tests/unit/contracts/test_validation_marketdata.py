"""The protovalidate rules of trading.marketdata.v1 accept good input and name
the right field (and rule) for bad input; the tick events route as declared."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from trading.marketdata.v1 import events_pb2 as ev
from trading.marketdata.v1 import marketdata_service_pb2 as pb

from runtime import contracts
from tests.support.validation import dec, violations

NOW = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_000_000)


def tick() -> ev.Tick:
    return ev.Tick(
        symbol="BTC-USD",
        bid_price=dec("64000.5"),
        bid_size=dec("0.25"),
        ask_price=dec("64001"),
        ask_size=dec("1.5"),
        exchange_time=NOW,
        receive_time=NOW,
        sequence=42,
        source="synthetic",
    )


@pytest.mark.parametrize(
    "msg",
    [
        pb.ListInstrumentsRequest(),
        pb.ListInstrumentsRequest(
            page_size=500,
            status=pb.INSTRUMENT_STATUS_TRADING,
            asset_class=pb.ASSET_CLASS_CRYPTO,
            quote_asset="USD",
        ),
        pb.GetInstrumentRequest(symbol="AAPL"),
        pb.GetQuoteRequest(symbol="BTC-USD"),
        pb.StreamQuotesRequest(symbols=["BTC-USD", "ETH-USD"]),
        pb.StreamQuotesRequest(symbols=["AAPL"], conflation_interval=duration_pb2.Duration(seconds=60)),
        tick(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_valid_messages_pass(msg: Message) -> None:
    assert violations(msg) == set()


BAD: list[tuple[str, Message, tuple[str, str]]] = [
    ("lower-case symbol", pb.GetQuoteRequest(symbol="btc-usd"), ("symbol", "string.pattern")),
    ("slash in symbol", pb.GetInstrumentRequest(symbol="BTC/USD"), ("symbol", "string.pattern")),
    ("empty symbol", pb.GetQuoteRequest(), ("symbol", "string.pattern")),
    ("page_size 10000", pb.ListInstrumentsRequest(page_size=10000), ("page_size", "int32.gte_lte")),
    (
        "undefined status filter",
        pb.ListInstrumentsRequest(status=pb.InstrumentStatus.ValueType(99)),
        ("status", "enum.defined_only"),
    ),
    ("bad quote asset", pb.ListInstrumentsRequest(quote_asset="usd"), ("quote_asset", "string.pattern")),
    ("no symbols", pb.StreamQuotesRequest(), ("symbols", "repeated.min_items")),
    (
        "101 symbols",
        pb.StreamQuotesRequest(symbols=[f"S{i}" for i in range(101)]),
        ("symbols", "repeated.max_items"),
    ),
    ("duplicate symbols", pb.StreamQuotesRequest(symbols=["AAPL", "AAPL"]), ("symbols", "repeated.unique")),
    ("bad symbol in list", pb.StreamQuotesRequest(symbols=["AAPL", "a b"]), ("symbols[1]", "string.pattern")),
    (
        "conflation over a minute",
        pb.StreamQuotesRequest(symbols=["AAPL"], conflation_interval=duration_pb2.Duration(seconds=61)),
        ("conflation_interval", "duration.gte_lte"),
    ),
]


@pytest.mark.parametrize(("case", "msg", "expected"), BAD, ids=[c[0] for c in BAD])
def test_bad_requests_name_the_field(case: str, msg: Message, expected: tuple[str, str]) -> None:
    assert expected in violations(msg), case


def test_bad_ticks_name_the_field() -> None:
    no_times = tick()
    no_times.ClearField("exchange_time")
    assert ("exchange_time", "required") in violations(no_times)
    bad_price = tick()
    bad_price.bid_price.value = "1e5"
    assert ("bid_price.value", "string.pattern") in violations(bad_price)
    no_source = tick()
    no_source.source = ""
    assert ("source", "string.min_len") in violations(no_source)


def test_tick_rejected_accepts_an_invalid_tick_but_needs_a_reason() -> None:
    broken = ev.Tick(symbol="btc/usd")  # invalid on purpose: that is why it was rejected
    rejected = ev.TickRejected(
        symbol="btc/usd",
        reason=ev.TICK_REJECT_REASON_UNKNOWN_SYMBOL,
        tick=broken,
        source="replay",
        rejected_at=NOW,
    )
    assert violations(rejected) == set()
    rejected.reason = ev.TICK_REJECT_REASON_UNSPECIFIED
    assert ("reason", "enum.not_in") in violations(rejected)


def test_ticks_go_to_kafka_by_symbol_and_to_a_per_symbol_nats_subject() -> None:
    registry = contracts.event_registry()
    name = ev.Tick.DESCRIPTOR.full_name
    route = registry.route(name)
    assert route.kafka_topic == "trading.marketdata.ticks"
    assert registry.partition_key(name, "", tick()) == b"BTC-USD"
    assert registry.nats_subject(name, "", tick()) == "marketdata.ticks.BTC-USD"
    assert registry.route(ev.TickRejected.DESCRIPTOR.full_name).kafka_topic == "trading.marketdata.rejects"


def test_get_quote_is_bound_by_path_twice() -> None:
    method = pb.DESCRIPTOR.services_by_name["MarketDataService"].methods_by_name["GetQuote"]
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    assert rule.get == "/v1/quotes/{symbol}"
    assert [b.get for b in rule.additional_bindings] == ["/v1/instruments/{symbol}/quote"]


def test_every_rpc_is_a_read_with_the_marketdata_scope() -> None:
    for method in pb.DESCRIPTOR.services_by_name["MarketDataService"].methods:
        policy = contracts.method_policy(contracts.full_method_name(method))
        assert policy.idempotent and list(policy.scopes) == ["marketdata:read"], method.name
