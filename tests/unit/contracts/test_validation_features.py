"""The protovalidate rules of trading.features.v1 accept good input and name the
right field (and rule) for bad input; feature vectors route as declared."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2
from trading.common.v1 import decimal_pb2
from trading.features.v1 import events_pb2 as ev
from trading.features.v1 import features_service_pb2 as pb

from runtime import contracts
from tests.support.validation import violations


def vector(symbol: str = "ETH-USD") -> pb.FeatureVector:
    return pb.FeatureVector(
        symbol=symbol,
        as_of=timestamp_pb2.Timestamp(seconds=1_700_000_000),
        tick_sequence=7,
        feature_set_version="fs-1",
        warmed_up=True,
        mid_price=decimal_pb2.Decimal(value="3000.25"),
        spread=decimal_pb2.Decimal(value="0.5"),
        rsi=55.0,
        order_book_imbalance=-0.2,
    )


def test_get_features_accepts_a_symbol() -> None:
    assert violations(pb.GetFeaturesRequest(symbol="ETH-USD")) == set()


@pytest.mark.parametrize("symbol", ["", "eth-usd", "ETH_USD", "A-B-C", "TOOLONGSYMBOL1"])
def test_get_features_rejects_bad_symbols(symbol: str) -> None:
    assert ("symbol", "string.pattern") in violations(pb.GetFeaturesRequest(symbol=symbol))


def test_feature_vector_computed_validates_symbol_and_vector() -> None:
    assert violations(ev.FeatureVectorComputed(symbol="ETH-USD", vector=vector())) == set()
    assert ("vector", "required") in violations(ev.FeatureVectorComputed(symbol="ETH-USD"))
    mismatch = ev.FeatureVectorComputed(symbol="BTC-USD", vector=vector("ETH-USD"))
    assert ("", "feature_vector_computed.symbol_matches") in violations(mismatch)


def test_prices_are_decimals_and_statistics_are_doubles() -> None:
    fields = pb.FeatureVector.DESCRIPTOR.fields_by_name
    for name in ("mid_price", "spread", "vwap", "ema_fast", "ema_slow"):
        message_type = fields[name].message_type
        assert message_type is not None and message_type.full_name == "trading.common.v1.Decimal", name
    for name in ("log_return", "rsi", "volatility", "order_book_imbalance", "spread_bps"):
        assert fields[name].cpp_type == fields[name].CPPTYPE_DOUBLE, name


def test_vectors_go_to_nats_per_symbol_and_to_kafka_for_replay() -> None:
    registry = contracts.event_registry()
    name = ev.FeatureVectorComputed.DESCRIPTOR.full_name
    event = ev.FeatureVectorComputed(symbol="ETH-USD", vector=vector())
    assert registry.route(name).kafka_topic == "trading.features.vectors"
    assert registry.nats_subject(name, "", event) == "features.vectors.ETH-USD"
    assert registry.partition_key(name, "", event) == b"ETH-USD"
