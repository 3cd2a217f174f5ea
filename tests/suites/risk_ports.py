"""The contract of risk's port (services/risk/ports.py: RiskStore), run against
every adapter: the in-memory one (tests/unit/services/risk/test_risk_ports_memory.py)
and the Redis one (tests/integration/storage/test_risk_ports_redis.py).

A concrete class provides the fixtures ``store`` (a RiskStore with the
default rate and time bound), ``put_quote`` (writes a symbol's last quote
where the store reads it) and ``stored_rows`` (the tenant's outbox rows
waiting to be published, as (destination, envelope) in order). Tenants and
symbols are unique per test and times are the wall clock's, so the Redis
adapter can share the session's server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from trading.common.v1 import decimal_pb2, market_pb2
from trading.risk.v1 import events_pb2 as ev
from trading.risk.v1 import risk_service_pb2 as pb

from runtime.messaging import new_envelope
from runtime.outbox import KAFKA, NATS, OutboxRow, outbox_row
from services.risk import domain
from services.risk.ports import LimitsConflictError, RiskStore, StoredLimits
from services.risk.wire import canonical_limits

PutQuote = Callable[[str, market_pb2.Quote], Awaitable[None]]
StoredRows = Callable[[str], Awaitable[list[tuple[str, bytes]]]]

BUY, SELL = domain.Side.BUY, domain.Side.SELL
ACTIVE, REDUCING, HALTED = (
    domain.TradingState.ACTIVE,
    domain.TradingState.REDUCING,
    domain.TradingState.HALTED,
)
SECOND_US = 1_000_000


def new_tenant() -> str:
    return f"rs-{uuid.uuid4().hex[:10]}"


def new_symbol() -> str:
    return f"R{uuid.uuid4().hex[:8].upper()}"


def rows_of(tenant: str, note: str) -> list[OutboxRow]:
    """One event's rows (both transports), as risk's events module makes them."""
    alert = ev.RiskAlert(alert_id=str(uuid.uuid4()), message=note)
    envelope = new_envelope(alert, tenant_id=tenant, correlation_id="suite", producer="risk-suite")
    return [outbox_row(envelope, KAFKA), outbox_row(envelope, NATS)]


def as_stored(rows: Sequence[OutboxRow]) -> list[tuple[str, bytes]]:
    return [(r.destination, r.envelope) for r in rows]


def limits(rate: int = 50, notional: str = "1000") -> pb.RiskLimits:
    return canonical_limits(
        pb.RiskLimits(
            max_orders_per_second=rate,
            max_order_notional=decimal_pb2.Decimal(value=notional),
            default_max_position=decimal_pb2.Decimal(value="5"),
            price_collar_bps=50,
            daily_loss_limit=decimal_pb2.Decimal(value="100"),
        )
    )


def status(state: domain.TradingState, reason: str) -> pb.TradingStatus:
    message = pb.TradingStatus(state=pb.TradingState.ValueType(state), reason=reason, changed_by="ops-1")
    message.changed_at.FromNanoseconds(time.time_ns())
    return message


def quote(bid: str, ask: str) -> market_pb2.Quote:
    message = market_pb2.Quote(
        bid_price=decimal_pb2.Decimal(value=bid), ask_price=decimal_pb2.Decimal(value=ask)
    )
    message.receive_time.GetCurrentTime()
    return message


def today() -> datetime:
    return datetime.now(UTC)


class RiskStoreSuite:
    """RiskStore: per-tenant limits (compare-and-set), trading state, rate
    window, fills applied once, alerts throttled, outbox rows stored with the
    change; market-wide quotes and newest-only clusters."""

    # ---------------------------------------------------------------- limits

    async def test_limits_are_versioned_and_stored_with_their_event(
        self, store: RiskStore, stored_rows: StoredRows
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        assert await store.get_limits(tenant) is None
        announced: list[StoredLimits] = []

        def announce(change: StoredLimits) -> list[OutboxRow]:
            announced.append(change)
            return rows_of(tenant, f"limits v{change.version}")

        first = await store.set_limits(tenant, limits(), expected_version=0, actor="ops-1", announce=announce)
        assert (first.version, first.changed, first.previous, first.updated_by) == (1, True, None, "ops-1")
        assert announced[-1] == first
        stored = await store.get_limits(tenant)
        assert stored is not None
        assert (stored.limits, stored.version, stored.updated_by) == (limits(), 1, "ops-1")
        assert stored.updated_at_ns == first.updated_at_ns
        rows = await stored_rows(tenant)
        assert len(rows) == 2

        second = await store.set_limits(
            tenant, limits(rate=7), expected_version=1, actor="ops-2", announce=announce
        )
        assert (second.version, second.changed, second.previous) == (2, True, limits())
        assert len(await stored_rows(tenant)) == 4
        assert await store.get_limits(other) is None

    async def test_equal_limits_change_nothing_and_announce_nothing(
        self, store: RiskStore, stored_rows: StoredRows
    ) -> None:
        tenant = new_tenant()
        first = await store.set_limits(
            tenant, limits(), expected_version=0, actor="ops-1", announce=lambda c: rows_of(tenant, "first")
        )
        again = await store.set_limits(
            tenant, limits(), expected_version=0, actor="ops-2", announce=lambda c: rows_of(tenant, "again")
        )
        assert (again.version, again.changed, again.previous) == (1, False, limits())
        assert (again.updated_by, again.updated_at_ns) == ("ops-1", first.updated_at_ns)
        assert len(await stored_rows(tenant)) == 2

    async def test_a_stale_expected_version_conflicts_and_changes_nothing(
        self, store: RiskStore, stored_rows: StoredRows
    ) -> None:
        tenant = new_tenant()
        await store.set_limits(
            tenant, limits(), expected_version=0, actor="ops-1", announce=lambda c: rows_of(tenant, "v1")
        )
        with pytest.raises(LimitsConflictError) as conflict:
            await store.set_limits(
                tenant, limits(rate=9), expected_version=5, actor="ops-2", announce=lambda c: []
            )
        assert conflict.value.stored_version == 1
        stored = await store.get_limits(tenant)
        assert stored is not None and (stored.limits, stored.version) == (limits(), 1)
        assert len(await stored_rows(tenant)) == 2

    # ---------------------------------------------------------------- trading state

    async def test_state_switches_announce_the_state_they_replaced(
        self, store: RiskStore, stored_rows: StoredRows
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        assert await store.get_status(tenant) is None
        # Each call's announcement (an adapter may build one it then does not store).
        calls: list[tuple[domain.TradingState, list[OutboxRow]]] = []

        def announce(previous: domain.TradingState) -> list[OutboxRow]:
            calls.append((previous, rows_of(tenant, f"from {previous.name}")))
            return calls[-1][1]

        halt = status(HALTED, "ops halt")
        assert await store.set_status(tenant, halt, announce=announce) == ("changed", None)
        assert await store.get_status(tenant) == halt
        # Already HALTED: the first reason stays, nothing is announced.
        assert await store.set_status(tenant, status(HALTED, "again"), announce=announce) == ("same", halt)
        # The automatic switch to REDUCING never lifts a HALTED.
        reducing = status(REDUCING, "daily loss")
        assert await store.set_status(tenant, reducing, announce=announce, only_from=ACTIVE) == (
            "skipped",
            halt,
        )
        resume = status(ACTIVE, "resume")
        assert await store.set_status(tenant, resume, announce=announce) == ("changed", halt)
        (halted_from, halted_rows), (resumed_from, resumed_rows) = calls[0], calls[-1]
        assert (halted_from, resumed_from) == (ACTIVE, HALTED)
        assert await stored_rows(tenant) == as_stored([*halted_rows, *resumed_rows])
        assert await store.get_status(other) is None
        assert await stored_rows(other) == []

    async def test_switching_to_active_when_never_switched_is_the_same(
        self, store: RiskStore, stored_rows: StoredRows
    ) -> None:
        tenant = new_tenant()
        outcome = await store.set_status(
            tenant, status(ACTIVE, "noop"), announce=lambda p: rows_of(tenant, "x")
        )
        assert outcome == ("same", None)
        assert await store.get_status(tenant) is None
        assert await stored_rows(tenant) == []

    # ---------------------------------------------------------------- the rate window

    async def test_orders_are_counted_up_to_the_stored_rate_and_released(self, store: RiskStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        await store.set_limits(tenant, limits(rate=2), expected_version=0, actor="ops", announce=lambda c: [])
        now = time.time()
        at = int(now * 1e6)

        async def check(order: str, check_id: str, instant: int, consume: bool = True) -> tuple[int, bool]:
            read = await store.read_for_check(
                tenant, sym, check_id, order, consume=consume, now_s=now, rate_instant_us=instant
            )
            return read.orders_in_window, read.counted

        assert await check("o1", "c1", at) == (0, True)
        assert await check("o2", "c2", at + 100) == (1, True)
        assert await check("o3", "c3", at + 200) == (2, False)  # full: not counted
        assert await check("o4", "c4", at + 300, consume=False) == (2, False)  # dry run
        await store.release(tenant, "c2", "o2")
        assert await check("o3", "c3", at + 200) == (1, True)
        # A window is [start, start + 1 s): an order a second after the first
        # shares none with it, only with c3.
        assert await check("o5", "c5", at + SECOND_US) == (1, True)

    async def test_a_late_order_cannot_overfill_a_window_later_orders_filled(self, store: RiskStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        await store.set_limits(tenant, limits(rate=2), expected_version=0, actor="ops", announce=lambda c: [])
        now = time.time()
        at = int(now * 1e6)
        for i, offset in enumerate((0, 600_000)):
            read = await store.read_for_check(
                tenant, sym, f"c{i}", f"o{i}", consume=True, now_s=now, rate_instant_us=at + offset
            )
            assert read.counted
        # Sent half a second before the first: the busiest one-second window
        # holding it, [at - 0.5 s, at + 0.5 s), holds one counted order.
        early = await store.read_for_check(
            tenant, sym, "c-early", "o-early", consume=True, now_s=now, rate_instant_us=at - 500_000
        )
        assert (early.orders_in_window, early.counted) == (1, True)
        # Sent between the two counted at first: [at - 0.5 s, at + 0.5 s) holds
        # two orders already, although the plain second before it holds one.
        between = await store.read_for_check(
            tenant, sym, "c-mid", "o-mid", consume=True, now_s=now, rate_instant_us=at + 300_000
        )
        assert (between.orders_in_window, between.counted) == (2, False)

    async def test_a_retried_check_of_a_counted_order_keeps_its_first_id(self, store: RiskStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        now = time.time()
        first = await store.read_for_check(tenant, sym, "c-1", "order-1", consume=True, now_s=now)
        assert (first.counted, first.prior_check_id) == (True, None)
        retry = await store.read_for_check(tenant, sym, "c-2", "order-1", consume=True, now_s=now)
        assert (retry.counted, retry.prior_check_id, retry.orders_in_window) == (False, "c-1", 1)
        # Another tenant's order of the same id is its own.
        other = await store.read_for_check(new_tenant(), sym, "c-3", "order-1", consume=True, now_s=now)
        assert (other.counted, other.prior_check_id, other.orders_in_window) == (True, None, 0)
        # Released (denied), the order is no longer counted: its next check counts anew.
        await store.release(tenant, "c-1", "order-1")
        again = await store.read_for_check(tenant, sym, "c-4", "order-1", consume=True, now_s=now)
        assert (again.counted, again.prior_check_id, again.orders_in_window) == (True, None, 0)

    async def test_concurrent_checks_never_overshoot_the_rate(self, store: RiskStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        await store.set_limits(tenant, limits(rate=5), expected_version=0, actor="ops", announce=lambda c: [])
        now = time.time()
        reads = await asyncio.gather(
            *(store.read_for_check(tenant, sym, f"c{i}", f"o{i}", consume=True, now_s=now) for i in range(12))
        )
        assert sum(r.counted for r in reads) == 5

    # ---------------------------------------------------------------- what a check reads

    async def test_a_check_reads_the_tenants_state_and_the_quotes_it_needs(
        self, store: RiskStore, put_quote: PutQuote
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        traded, held, unquoted = new_symbol(), new_symbol(), new_symbol()
        now = datetime.now(UTC)
        await store.set_limits(tenant, limits(), expected_version=0, actor="ops", announce=lambda c: [])
        halt = status(HALTED, "halt")
        await store.set_status(tenant, halt, announce=lambda p: [])
        await store.apply_fill(
            tenant,
            domain.Fill("f1", symbol=held, side=BUY, quantity=D(2), price=D(10), fee=D(0), day=now.date()),
        )
        await store.apply_fill(
            tenant,
            domain.Fill(
                "f2", symbol=held, side=SELL, quantity=D(1), price=D(13), fee=D("0.5"), day=now.date()
            ),
        )
        await store.apply_fill(
            tenant,
            domain.Fill(
                "f3", symbol=unquoted, side=SELL, quantity=D(1), price=D(5), fee=D(0), day=now.date()
            ),
        )
        await put_quote(traded, quote("99", "101"))
        await put_quote(held, quote("11", "12"))

        read = await store.read_for_check(tenant, traded, "c1", "o1", consume=False, now_s=now.timestamp())
        assert read.limits_pb == limits().SerializeToString(deterministic=True)
        assert read.status_pb is not None and pb.TradingStatus.FromString(read.status_pb) == halt
        assert dict(read.positions) == {
            held: domain.Position(D(1), D(10)),
            unquoted: domain.Position(D(-1), D(5)),
        }
        assert read.realized_today == D("2.5")  # (13 - 10) x 1 - 0.5
        traded_quote = read.quotes[traded]
        assert traded_quote is not None
        assert market_pb2.Quote.FromString(traded_quote).bid_price.value == "99"
        assert read.quotes[held] is not None and read.quotes[unquoted] is None
        assert read.cluster is None

        theirs = await store.read_for_check(other, traded, "c1", "o1", consume=False, now_s=now.timestamp())
        assert (theirs.limits_pb, theirs.status_pb, dict(theirs.positions)) == (None, None, {})
        assert theirs.realized_today == 0

    # ---------------------------------------------------------------- fills

    async def test_a_fill_applies_once_and_a_flat_position_goes(self, store: RiskStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        day = today().date()

        async def fill(fill_id: str, side: domain.Side, qty: str, price: str, fee: str = "0") -> bool:
            return await store.apply_fill(
                tenant,
                domain.Fill(
                    fill_id, symbol=sym, side=side, quantity=D(qty), price=D(price), fee=D(fee), day=day
                ),
            )

        assert await fill("x1", BUY, "3", "100", "1")
        assert not await fill("x1", BUY, "3", "100", "1")
        assert await store.positions(tenant) == {sym: domain.Position(D(3), D(100))}
        assert await fill("x2", BUY, "1", "104")  # average (300 + 104) / 4 = 101
        assert await store.positions(tenant) == {sym: domain.Position(D(4), D(101))}
        assert await fill("x3", SELL, "4", "100", "0.25")  # closes: realised -4
        assert await store.positions(tenant) == {}
        assert await store.realized_today(tenant, time.time()) == D("-5.25")  # -1 - 4 - 0.25
        # Other days and tenants are apart.
        yesterday = (today() - timedelta(days=1)).timestamp()
        assert await store.realized_today(tenant, yesterday) == 0
        assert await store.positions(new_tenant()) == {}
        assert await store.realized_today(new_tenant(), time.time()) == 0

    async def test_amounts_are_kept_at_twelve_fractional_digits(self, store: RiskStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        day = today().date()
        await store.apply_fill(
            tenant,
            domain.Fill(
                "a", symbol=sym, side=BUY, quantity=D(1), price=D(1), fee=D("0.0000000000004"), day=day
            ),
        )
        await store.apply_fill(
            tenant, domain.Fill("b", symbol=sym, side=BUY, quantity=D(2), price=D(2), fee=D(0), day=day)
        )
        assert await store.positions(tenant) == {sym: domain.Position(D(3), D("1.666666666667"))}
        assert await store.realized_today(tenant, time.time()) == 0  # -4e-13 rounds to 0

    async def test_concurrent_deliveries_of_one_fill_apply_it_once(self, store: RiskStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        day = today().date()
        applied = await asyncio.gather(
            *(
                store.apply_fill(
                    tenant,
                    domain.Fill("same", symbol=sym, side=SELL, quantity=D(2), price=D(7), fee=D(0), day=day),
                )
                for _ in range(6)
            )
        )
        assert sum(applied) == 1
        assert await store.positions(tenant) == {sym: domain.Position(D(-2), D(7))}

    # ---------------------------------------------------------------- quotes and clusters

    async def test_quotes_are_market_wide(self, store: RiskStore, put_quote: PutQuote) -> None:
        quoted, unquoted = new_symbol(), new_symbol()
        await put_quote(quoted, quote("1", "2"))
        got = await store.quotes([quoted, unquoted])
        assert set(got) == {quoted, unquoted} and got[unquoted] is None
        data = got[quoted]
        assert data is not None and market_pb2.Quote.FromString(data).ask_price.value == "2"
        assert await store.quotes([]) == {}

    async def test_only_a_newer_computation_replaces_the_clusters(self, store: RiskStore) -> None:
        a, b, c, d = (new_symbol() for _ in range(4))
        at = time.time_ns() // 1000
        assert await store.set_clusters(at, {"k1": [b, a], "k2": [c, d]})
        first = await store.cluster_of(a)
        assert first is not None and (first.cluster_id, first.symbols) == ("k1", frozenset({a, b}))
        assert await store.cluster_of(d) == await store.cluster_of(c)
        assert not await store.set_clusters(at, {"k9": [a, c]})  # the same computation again
        assert not await store.set_clusters(at - 1, {"k9": [a, c]})  # an older one
        assert await store.cluster_of(b) == first
        assert await store.set_clusters(at + 1, {"k3": [a, c]})
        moved = await store.cluster_of(a)
        assert moved is not None and (moved.cluster_id, moved.symbols) == ("k3", frozenset({a, c}))
        assert await store.cluster_of(b) is None and await store.cluster_of(d) is None
        read = await store.read_for_check(new_tenant(), c, "c1", "o1", consume=False, now_s=time.time())
        assert read.cluster == moved

    # ---------------------------------------------------------------- alerts and events

    async def test_an_alert_is_stored_once_a_minute_per_kind_and_symbol(
        self, store: RiskStore, stored_rows: StoredRows
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        first = rows_of(tenant, "stale")
        assert await store.alert_once(tenant, "STALE_QUOTE", "BTC-USD", first)
        assert not await store.alert_once(tenant, "STALE_QUOTE", "BTC-USD", rows_of(tenant, "again"))
        other_symbol = rows_of(tenant, "eth")
        assert await store.alert_once(tenant, "STALE_QUOTE", "ETH-USD", other_symbol)
        no_symbol = rows_of(tenant, "rate")
        assert await store.alert_once(tenant, "ORDER_RATE", "", no_symbol)
        assert await stored_rows(tenant) == as_stored([*first, *other_symbol, *no_symbol])
        assert await store.alert_once(other, "STALE_QUOTE", "BTC-USD", rows_of(other, "theirs"))

    async def test_events_are_appended_in_order_per_tenant(
        self, store: RiskStore, stored_rows: StoredRows
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        one, two = rows_of(tenant, "one"), rows_of(tenant, "two")
        await store.add_events(tenant, one)
        await store.add_events(tenant, two)
        assert await stored_rows(tenant) == as_stored([*one, *two])
        assert await stored_rows(other) == []
