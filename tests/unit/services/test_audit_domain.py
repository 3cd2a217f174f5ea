"""The audit service's pure logic: the hash chain and its verifier, aggregate
derivation, and the replay of orders (execution's state machine) and
positions (portfolio's accounting) from events made by those same domains."""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from trading.execution.v1 import events_pb2 as execution_events
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.portfolio.v1 import types_pb2 as portfolio_types

from runtime.contracts import event_registry
from runtime.decimals import to_proto
from runtime.messaging import decode_envelope, new_envelope, unpack
from services.audit import domain
from services.audit.domain import replay as replay_logic
from services.execution import domain as ex
from services.execution import wire as ex_wire
from services.portfolio import domain as pf

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TENANT = "t-unit"


# ------------------------------------------------------------------ hash chain


def test_chain_hash_follows_the_contract_rule() -> None:
    prev, body = bytes(range(32)), b"envelope"
    want = hashlib.sha256(prev + struct.pack(">Q", 7) + body).digest()
    assert domain.chain_hash(prev, 7, body) == want
    assert len(domain.GENESIS_HASH) == 32 and domain.GENESIS_HASH == b"\x00" * 32


def _records(count: int, tenant: str = TENANT) -> list[domain.StoredRecord]:
    """A valid chain of `count` order events, built as the store builds it."""
    registry = event_registry()
    out: list[domain.StoredRecord] = []
    prev = domain.GENESIS_HASH
    for sequence in range(1, count + 1):
        order_id = str(uuid.uuid4())
        payload = execution_events.OrderAccepted(order_id=order_id)
        payload.order.order_id = order_id
        envelope = new_envelope(payload, tenant_id=tenant, correlation_id=f"c-{sequence}", producer="test")
        data = domain.canonical_bytes(envelope)
        decoded = decode_envelope(data)
        columns = domain.columns_of(decoded, unpack(decoded, registry), "order_id")
        digest = domain.chain_hash(prev, sequence, data)
        out.append(domain.StoredRecord(columns, sequence, data, prev, digest))
        prev = digest
    return out


def _verify(records: list[domain.StoredRecord], from_sequence: int = 0) -> domain.ChainVerifier:
    verifier = domain.ChainVerifier(event_registry(), from_sequence)
    for record in records:
        if verifier.check(record) is not None:
            break
    return verifier


def test_an_intact_chain_verifies() -> None:
    records = _records(5)
    v = _verify(records)
    assert v.broken is None
    assert (v.checked, v.first_sequence, v.last_sequence, v.last_hash) == (5, 1, 5, records[-1].hash)


def test_altered_envelope_bytes_are_named() -> None:
    records = _records(5)
    tampered = decode_envelope(records[2].envelope_bytes)
    tampered.correlation_id = "forged"
    records[2] = replace(records[2], envelope_bytes=tampered.SerializeToString())
    v = _verify(records)
    assert v.broken is not None
    assert v.broken.sequence == 3 and v.broken.reason is domain.BreakReason.HASH_MISMATCH
    assert v.broken.event_id == records[2].columns.event_id
    assert v.broken.actual_hash == records[2].hash and v.broken.expected_hash != records[2].hash
    assert v.checked == 3 and v.last_hash == records[1].hash


def test_an_altered_column_is_named_even_with_the_hash_intact() -> None:
    records = _records(4)
    records[1] = replace(records[1], columns=replace(records[1].columns, correlation_id="forged"))
    v = _verify(records)
    assert v.broken is not None and v.broken.sequence == 2
    assert v.broken.reason is domain.BreakReason.HASH_MISMATCH
    assert "correlation_id" in v.broken.message


def test_a_rehashed_forgery_breaks_the_next_link() -> None:
    records = _records(4)
    forged = decode_envelope(records[1].envelope_bytes)
    forged.producer = "mallory"
    data = forged.SerializeToString()
    cols = replace(records[1].columns, producer="mallory")
    records[1] = replace(
        records[1], columns=cols, envelope_bytes=data, hash=domain.chain_hash(records[1].prev_hash, 2, data)
    )
    v = _verify(records)
    assert v.broken is not None and v.broken.sequence == 3
    assert v.broken.reason is domain.BreakReason.PREV_HASH_MISMATCH
    assert v.broken.expected_hash == records[1].hash and v.broken.actual_hash == records[2].prev_hash


def test_a_deleted_record_is_a_gap() -> None:
    records = _records(5)
    del records[1]
    v = _verify(records)
    assert v.broken is not None
    assert (v.broken.sequence, v.broken.reason, v.broken.event_id) == (2, domain.BreakReason.SEQUENCE_GAP, "")
    assert v.checked == 1


def test_a_deleted_first_record_is_a_gap_and_a_range_trusts_its_first_link() -> None:
    records = _records(4)
    assert _verify(records[1:]).broken is not None
    v = _verify(records[1:], from_sequence=2)
    assert v.broken is None and v.checked == 3 and v.first_sequence == 2


def test_first_record_must_link_to_genesis() -> None:
    records = _records(2)
    records[0] = replace(records[0], prev_hash=b"\x01" * 32)
    v = _verify(records)
    assert v.broken is not None and v.broken.reason is domain.BreakReason.PREV_HASH_MISMATCH


def test_chain_links_continue_a_chain_as_single_appends_would() -> None:
    records = _records(6)
    # From an empty chain: exactly the chain the store builds one record at a time.
    links = domain.chain_links(0, domain.GENESIS_HASH, (r.envelope_bytes for r in records))
    assert [(k.sequence, k.prev_hash, k.hash) for k in links] == [
        (r.sequence, r.prev_hash, r.hash) for r in records
    ]
    # From a head: the rest of the chain, linked to the head's hash.
    head = records[2]
    tail = domain.chain_links(head.sequence, head.hash, (r.envelope_bytes for r in records[3:]))
    assert [(k.sequence, k.prev_hash, k.hash) for k in tail] == [
        (r.sequence, r.prev_hash, r.hash) for r in records[3:]
    ]
    assert domain.chain_links(7, head.hash, []) == []


# ------------------------------------------------------------------ aggregates


def test_aggregates_are_derived_from_the_payload() -> None:
    order_id = str(uuid.uuid4())
    cases = [
        (execution_events.OrderFillReported(order_id=order_id), "order_id", ("order", order_id)),
        (portfolio_events.PositionChanged(symbol="BTC-USD"), "tenant", ("position", "BTC-USD")),
        (portfolio_events.PortfolioSnapshot(), "tenant", ("portfolio", TENANT)),
        # An empty id falls back to the tenant as a whole.
        (execution_events.OrderAccepted(), "order_id", ("tenant", TENANT)),
    ]
    for payload, key, want in cases:
        envelope = new_envelope(payload, tenant_id=TENANT, correlation_id="c", producer="test")
        assert domain.aggregate_of(envelope, payload, key) == want, payload


def test_every_registered_event_type_has_an_aggregate_rule() -> None:
    registry = event_registry()
    for name in registry.event_types():
        assert name in domain.AGGREGATES or registry.route(name).partition_key not in ("", "tenant"), name


# ------------------------------------------------------------------ replay


def _order(order_id: str, side: ex.Side, qty: str, tif: ex.TimeInForce = ex.TimeInForce.IOC) -> ex.Order:
    return ex.new_order(
        order_id=order_id,
        tenant_id=TENANT,
        client_order_id=f"c-{order_id[:8]}",
        symbol="BTC-USD",
        side=side,
        type=ex.OrderType.MARKET,
        time_in_force=tif,
        quantity=D(qty),
        limit_price=None,
        created_at=T0,
    )


def _events(order: ex.Order, inputs: list[ex.OrderInput]) -> tuple[ex.Order, list[domain.OrderPayload]]:
    """The order after `inputs` and the Kafka payloads execution emits for them."""
    final, emitted = ex.apply_all(order, inputs)
    return final, [ex_wire.event_to_proto(e) for e in emitted]


def _fill(n: int, price: str, qty: str) -> ex.ReportFill:
    return ex.ReportFill(
        at=T0 + timedelta(seconds=n),
        execution_id=str(uuid.uuid4()),
        price=D(price),
        quantity=D(qty),
        fee=D("0.01"),
        fee_currency="USD",
    )


def test_orders_replay_to_the_live_snapshots_whatever_the_delivery_order() -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    final_a, events_a = _events(
        _order(a, ex.Side.BUY, "0.03"),
        [
            ex.Accept(at=T0, venue="paper"),
            _fill(1, "100.5", "0.01"),
            _fill(2, "101", "0.01"),
            ex.Cancel(
                at=T0 + timedelta(seconds=3), reason=ex.CancelReason.UNFILLED_REMAINDER, message="rest"
            ),
        ],
    )
    final_b, events_b = _events(
        _order(b, ex.Side.SELL, "1", ex.TimeInForce.GTC),
        [
            ex.Accept(at=T0),
            ex.RequestCancel(at=T0 + timedelta(seconds=1)),
            ex.Cancel(at=T0 + timedelta(seconds=2)),
        ],
    )
    final_c, events_c = _events(_order(c, ex.Side.BUY, "1"), [ex.Reject(at=T0, reason="RISK_MAX_NOTIONAL")])
    replay = domain.OrderReplay(TENANT)
    # Fills travel on another topic than the status events: deliver them last, and one twice.
    for payload in [*events_b, *reversed(events_a), events_a[1], *events_c]:
        replay.add(payload)
    rebuilt = replay.rebuild()
    live = [ex_wire.order_to_proto(o) for o in (final_a, final_b, final_c)]
    assert domain.compare_orders(rebuilt, live) == []
    order_a = rebuilt[a].order
    assert order_a is not None and order_a.status is ex.OrderStatus.CANCELED
    assert order_a.average_fill_price == D("100.75")


def test_order_differences_are_reported_field_by_field() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    final_a, events_a = _events(
        _order(a, ex.Side.BUY, "0.02"), [ex.Accept(at=T0), _fill(1, "100", "0.01"), _fill(2, "102", "0.01")]
    )
    replay = domain.OrderReplay(TENANT)
    for payload in events_a[:2]:  # the last fill is missing from the store
        replay.add(payload)
    extra = ex_wire.order_to_proto(_order(b, ex.Side.SELL, "1"))
    diffs = domain.compare_orders(replay.rebuild(), [ex_wire.order_to_proto(final_a), extra])
    fields = {(d.aggregate_id, d.field, d.kind) for d in diffs}
    mismatch = domain.DifferenceKind.VALUE_MISMATCH
    assert (a, "status", mismatch) in fields
    assert (a, "filled_quantity", mismatch) in fields
    assert (a, "average_fill_price", mismatch) in fields
    assert (a, "version", mismatch) in fields
    assert (b, "", domain.DifferenceKind.MISSING_IN_REPLAY) in fields
    status = next(d for d in diffs if d.field == "status")
    assert (status.replayed_value, status.live_value) == ("PARTIALLY_FILLED", "FILLED")
    filled = next(d for d in diffs if d.field == "filled_quantity")
    assert (filled.replayed_value, filled.live_value) == ("0.01", "0.02")


def test_an_impossible_event_sequence_is_reported_not_raised() -> None:
    a = str(uuid.uuid4())
    _, events = _events(_order(a, ex.Side.BUY, "1"), [ex.Accept(at=T0), _fill(1, "10", "1")])
    replay = domain.OrderReplay(TENANT)
    replay.add(events[1])  # a fill without the acceptance before it
    rebuilt = replay.rebuild()
    assert rebuilt[a].error.startswith("version 3")
    diffs = domain.compare_orders(rebuilt, [])
    assert [(d.field, d.kind) for d in diffs] == [
        ("events", domain.DifferenceKind.VALUE_MISMATCH),
        ("", domain.DifferenceKind.MISSING_IN_LIVE),
    ]


def _fill_event(
    symbol: str, side: int, qty: str, price: str, fee: str = "0"
) -> execution_events.OrderFillReported:
    order_id = str(uuid.uuid4())
    payload = execution_events.OrderFillReported(order_id=order_id)
    f = payload.fill
    f.execution_id, f.order_id, f.symbol, f.side = str(uuid.uuid4()), order_id, symbol, side  # type: ignore[assignment]
    f.quantity.CopyFrom(to_proto(qty))
    f.price.CopyFrom(to_proto(price))
    f.fee.currency = "USD"
    f.fee.amount.CopyFrom(to_proto(fee))
    f.executed_at.FromDatetime(T0)
    payload.order.order_id = order_id
    payload.order.symbol = symbol
    return payload


def _live_position(p: pf.Position) -> portfolio_types.Position:
    msg = portfolio_types.Position(symbol=p.symbol, quantity=to_proto(pf.wire(p.quantity)), version=p.version)
    msg.realized_pnl.amount.CopyFrom(to_proto(pf.wire(p.realized_pnl)))
    msg.fees_paid.amount.CopyFrom(to_proto(pf.wire(p.fees_paid)))
    if p.average_price is not None:
        msg.average_price.CopyFrom(to_proto(pf.wire(p.average_price)))
    return msg


def test_positions_replay_in_the_order_portfolio_booked_them() -> None:
    # Three buys whose average does not terminate, then a sell: the rounded
    # average (hence realised PnL) depends on the order the buys were booked.
    fills = [
        _fill_event("ETH-USD", 1, "1", "100"),
        _fill_event("ETH-USD", 1, "1", "101"),
        _fill_event("ETH-USD", 1, "1", "103", fee="0.5"),
        _fill_event("ETH-USD", 1, "3", "104"),
        _fill_event("ETH-USD", 2, "2", "110"),
    ]
    booked = [fills[0], fills[1], fills[3], fills[2], fills[4]]  # portfolio's order of application
    live = pf.Position(symbol="ETH-USD")
    for p in booked:
        live = pf.apply_fill(live, replay_logic._fill_of(p)).position  # type: ignore[arg-type]
    replay = domain.PositionReplay()
    for sequence, payload in enumerate(fills, start=1):
        replay.add_fill(sequence, payload)
        replay.add_fill(sequence + 100, payload)  # a redelivery is booked once
    for version, payload in enumerate(booked, start=1):
        change = portfolio_events.PositionChanged(symbol="ETH-USD", execution_id=payload.fill.execution_id)
        change.position.version = version
        replay.add_booking(change)
    rebuilt = replay.rebuild()
    assert domain.compare_positions(rebuilt, [_live_position(live)]) == []
    # Without the bookings (sequence order) the average path differs: the replay says so.
    unordered = domain.PositionReplay()
    for sequence, payload in enumerate(fills, start=1):
        unordered.add_fill(sequence, payload)
    diffs = domain.compare_positions(unordered.rebuild(), [_live_position(live)])
    assert {d.field for d in diffs} <= {"average_price", "realized_pnl"} and diffs


def test_position_differences_and_missing_positions() -> None:
    replay = domain.PositionReplay()
    replay.add_fill(1, _fill_event("BTC-USD", 1, "0.5", "60000"))
    live_btc = _live_position(pf.Position("BTC-USD", D("0.4"), D("60000"), D(0), D(0), 1))
    live_sol = _live_position(pf.Position("SOL-USD", D("1"), D("20"), D(0), D(0), 1))
    diffs = domain.compare_positions(replay.rebuild(), [live_btc, live_sol])
    assert [(d.aggregate_id, d.field, d.kind, d.replayed_value, d.live_value) for d in diffs] == [
        ("BTC-USD", "quantity", domain.DifferenceKind.VALUE_MISMATCH, "0.5", "0.4"),
        ("SOL-USD", "", domain.DifferenceKind.MISSING_IN_REPLAY, "", "1"),
    ]


def test_fills_portfolio_refuses_are_not_replayed() -> None:
    bad = _fill_event("BTC-USD", 1, "1", "10")
    bad.fill.fee.currency = "EUR"
    replay = domain.PositionReplay()
    replay.add_fill(1, bad)
    assert replay.rebuild() == {}


def test_difference_kinds_and_reasons_mirror_the_contract() -> None:
    from trading.audit.v1 import types_pb2

    for member in domain.DifferenceKind:
        assert types_pb2.DifferenceKind.Value(f"DIFFERENCE_KIND_{member.name}") == member.value
    for reason in domain.BreakReason:
        assert types_pb2.ChainBreakReason.Value(f"CHAIN_BREAK_REASON_{reason.name}") == reason.value
