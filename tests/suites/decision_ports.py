"""The contract of decision's ports (services/decision/ports.py), one suite
per port, run against every adapter: the in-memory ones
(tests/unit/services/decision/test_decision_ports_memory.py) and the real
PostgreSQL and Redis ones (tests/integration/storage/test_decision_ports_postgres.py).

A concrete class provides the fixtures: ``strategies`` (a
:class:`StrategyStore` announcing with :func:`announce_strategy`) and
``outbox`` for :class:`StrategyStoreSuite`; ``signals`` (a
:class:`SignalStore` with :data:`INTENT_TTL` and :data:`ANSWER_WITHIN`) and
``outbox`` for :class:`SignalStoreSuite`; ``directory`` (an
:class:`InstrumentDirectory` never published to) and ``publish`` for
:class:`InstrumentDirectorySuite`. ``outbox(tenant)`` gives the event ids the
adapter wrote to decision's outbox for that tenant, in order. Tenants,
symbols and vector keys are unique per test, so the real adapters can share
one server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import asyncpg
import pytest
from trading.decision.v1 import events_pb2

from runtime.messaging import new_envelope, uuid7
from runtime.outbox import KAFKA, OutboxRow, outbox_row
from services.decision.domain import IntentStatus
from services.decision.ports import (
    ExpiredIntent,
    InstrumentDirectory,
    NewSignal,
    PendingOrder,
    SignalFilter,
    SignalStore,
    StrategyRow,
    StrategyStore,
    VersionMismatchError,
)

Outbox = Callable[[str], Awaitable[list[str]]]
Publish = Callable[[Sequence[str]], Awaitable[None]]

INTENT_TTL = timedelta(minutes=10)
ANSWER_WITHIN = timedelta(seconds=2)
T0 = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)
BUY, SELL, HOLD = 1, 2, 3


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def new_symbol() -> str:
    return f"S{uuid.uuid4().hex[:8].upper()}-USD"


def _event(payload: events_pb2.StrategyUpdated | events_pb2.OrderIntentExpired, tenant: str) -> OutboxRow:
    envelope = new_envelope(payload, tenant_id=tenant, correlation_id="suite", producer="decision-suite")
    return outbox_row(envelope, KAFKA)


def announce_strategy(row: StrategyRow, previous_version: int) -> list[OutboxRow]:
    """A StrategyUpdated row, as the servicer's announcement writes one."""
    payload = events_pb2.StrategyUpdated(strategy_id=row.strategy_id, previous_version=previous_version)
    return [_event(payload, row.tenant_id)]


def strategy(tenant: str, strategy_id: str = "momentum", **changes: object) -> StrategyRow:
    fields: dict[str, object] = {
        "tenant_id": tenant,
        "strategy_id": strategy_id,
        "name": "momentum",
        "description": "",
        "symbols": ("BTC-USD",),
        "enabled": True,
        "max_position": D("10"),
        "fixed_quantity": D("1"),
        "model_ids": ("gbt-trend",),
        "signal_threshold": 0.5,
        "cooldown_ms": 0,
        "version": 0,
        "created_at": T0,
        "updated_at": T0,
        "updated_by": "user-1",
    }
    fields.update(changes)
    return StrategyRow(**fields)  # type: ignore[arg-type]


class StrategyStoreSuite:
    """Versioned strategies per tenant, announced with every new version."""

    async def test_a_new_strategy_is_version_1_and_announced_once(
        self, strategies: StrategyStore, outbox: Outbox
    ) -> None:
        tenant = new_tenant()
        new = strategy(tenant, max_position=D("10.50"), updated_at=T0 + timedelta(seconds=1))
        stored, previous = await strategies.upsert(new, 0)
        assert previous is None
        assert stored == replace(new, max_position=D("10.5"), version=1, created_at=new.updated_at)
        assert await strategies.get(tenant, "momentum") == stored
        assert len(await outbox(tenant)) == 1
        assert tenant in await strategies.tenants()

    async def test_an_unchanged_configuration_keeps_the_version_and_announces_nothing(
        self, strategies: StrategyStore, outbox: Outbox
    ) -> None:
        tenant = new_tenant()
        stored, _ = await strategies.upsert(strategy(tenant), 0)
        again = strategy(tenant, updated_at=T0 + timedelta(hours=1), updated_by="someone-else")
        assert await strategies.upsert(again, 1) == (stored, stored)
        assert len(await outbox(tenant)) == 1

    async def test_a_change_makes_the_next_version_and_keeps_created_at(
        self, strategies: StrategyStore, outbox: Outbox
    ) -> None:
        tenant = new_tenant()
        first, _ = await strategies.upsert(strategy(tenant), 0)
        later = T0 + timedelta(minutes=5)
        second, previous = await strategies.upsert(
            strategy(tenant, signal_threshold=0.7, updated_at=later, updated_by="user-2"), 1
        )
        assert previous == first
        assert (second.version, second.signal_threshold, second.created_at, second.updated_at) == (
            2,
            0.7,
            first.created_at,
            later,
        )
        assert second.updated_by == "user-2"
        third, _ = await strategies.upsert(strategy(tenant, symbols=("ETH-USD",)), 0)  # 0: unconditional
        assert third.version == 3
        assert len(await outbox(tenant)) == 3

    async def test_a_stale_expected_version_is_refused_with_the_stored_one(
        self, strategies: StrategyStore, outbox: Outbox
    ) -> None:
        tenant = new_tenant()
        with pytest.raises(VersionMismatchError) as none_yet:
            await strategies.upsert(strategy(tenant), 3)
        assert none_yet.value.stored == 0
        await strategies.upsert(strategy(tenant), 0)
        with pytest.raises(VersionMismatchError) as stale:
            await strategies.upsert(strategy(tenant, name="other"), 2)
        assert stale.value.stored == 1
        assert (await strategies.get(tenant, "momentum")) == replace(
            strategy(tenant), version=1, created_at=T0
        )
        assert len(await outbox(tenant)) == 1

    async def test_tenants_never_see_each_others_strategies(
        self, strategies: StrategyStore, outbox: Outbox
    ) -> None:
        a, b = new_tenant(), new_tenant()
        await strategies.upsert(strategy(a, name="a's"), 0)
        await strategies.upsert(strategy(b, name="b's", enabled=False), 0)
        got_a, got_b = await strategies.get(a, "momentum"), await strategies.get(b, "momentum")
        assert got_a is not None and got_b is not None
        assert (got_a.name, got_b.name) == ("a's", "b's")
        assert [r.tenant_id for r in await strategies.list_page(a, after="", limit=10)] == [a]
        assert await strategies.enabled(b) == []
        assert await strategies.get(new_tenant(), "momentum") is None
        assert {a, b} <= set(await strategies.tenants())
        assert len(await outbox(a)) == len(await outbox(b)) == 1

    async def test_pages_go_by_id_and_filter_by_symbol_and_enabled(self, strategies: StrategyStore) -> None:
        tenant = new_tenant()
        for sid, symbols, enabled in [
            ("d", ("BTC-USD",), True),
            ("a", ("BTC-USD", "ETH-USD"), False),
            ("c", ("ETH-USD",), True),
            ("b", ("BTC-USD",), True),
        ]:
            await strategies.upsert(strategy(tenant, sid, symbols=symbols, enabled=enabled), 0)

        async def ids(**kwargs: object) -> list[str]:
            args: dict[str, object] = {"after": "", "limit": 10} | kwargs
            return [r.strategy_id for r in await strategies.list_page(tenant, **args)]  # type: ignore[arg-type]

        assert await ids() == ["a", "b", "c", "d"]
        assert await ids(limit=2) == ["a", "b"]
        assert await ids(after="b", limit=2) == ["c", "d"]
        assert await ids(symbol="BTC-USD") == ["a", "b", "d"]
        assert await ids(symbol="ETH-USD", enabled_only=True) == ["c"]
        assert await ids(symbol="XRP-USD") == []
        assert [r.strategy_id for r in await strategies.enabled(tenant)] == ["b", "c", "d"]

    async def test_enabling_changes_only_what_differs(
        self, strategies: StrategyStore, outbox: Outbox
    ) -> None:
        tenant = new_tenant()
        assert await strategies.set_enabled(tenant, "momentum", False, 0, T0, "u") is None
        created, _ = await strategies.upsert(strategy(tenant), 0)
        assert await strategies.set_enabled(tenant, "momentum", True, 1, T0, "u") == (created, created)
        at = T0 + timedelta(minutes=1)
        result = await strategies.set_enabled(tenant, "momentum", False, 1, at, "user-9")
        assert result is not None
        stored, previous = result
        assert previous == created
        assert stored == replace(created, enabled=False, version=2, updated_at=at, updated_by="user-9")
        with pytest.raises(VersionMismatchError) as stale:
            await strategies.set_enabled(tenant, "momentum", True, 1, at, "u")
        assert stale.value.stored == 2
        assert await strategies.enabled(tenant) == []
        assert len(await outbox(tenant)) == 2

    async def test_a_row_the_table_refuses_changes_nothing(
        self, strategies: StrategyStore, outbox: Outbox
    ) -> None:
        tenant = new_tenant()
        for bad in [
            strategy(tenant, "Not An Id"),
            strategy(tenant, max_position=D(0)),
            strategy(tenant, fixed_quantity=D("-1")),
            strategy(tenant, signal_threshold=1.5),
            strategy(tenant, cooldown_ms=-1),
        ]:
            with pytest.raises(asyncpg.CheckViolationError):
                await strategies.upsert(bad, 0)
        assert await strategies.list_page(tenant, after="", limit=10) == []
        assert tenant not in await strategies.tenants()
        assert await outbox(tenant) == []


def signal(
    symbol: str,
    key: str = "",
    *,
    at: datetime | None = None,
    strategy_id: str = "momentum",
    direction: int = BUY,
    intent: bool = True,
    quantity: str = "1",
    events: int = 1,
) -> NewSignal:
    """A signal generated `at` (default: now), with an intent unless `intent` is False."""
    key = key or uuid.uuid4().hex
    signal_id = str(uuid7())
    tenant_less = [
        _event(events_pb2.StrategyUpdated(strategy_id=f"{key}-{i}"), "") for i in range(events)
    ]  # the rows' content is the adapter's to copy, not to read
    return NewSignal(
        signal_id=signal_id,
        vector_key=key,
        strategy_id=strategy_id,
        symbol=symbol,
        direction=direction,
        generated_at=at or datetime.now(UTC),
        client_order_id=f"dc-{key}" if intent else "",
        side=1 if intent else 0,
        quantity=D(quantity) if intent else None,
        payload=f"payload of {key}".encode(),
        outbox=tuple(tenant_less),
    )


def _rows(tenant: str, s: NewSignal) -> NewSignal:
    """The signal with its outbox rows stamped with the tenant (the outbox is per tenant)."""
    return replace(s, outbox=tuple(replace(r, tenant_id=tenant) for r in s.outbox))


def order_of(s: NewSignal) -> PendingOrder:
    assert s.quantity is not None
    return PendingOrder(
        s.signal_id, s.strategy_id, s.symbol, s.client_order_id, s.side, s.quantity, s.payload
    )


class SignalStoreSuite:
    """Signals unique by vector key, intents moving once, positions by fill, per tenant."""

    async def test_a_new_intent_is_recorded_once_and_reserves_the_cooldown(
        self, signals: SignalStore, outbox: Outbox
    ) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        s = _rows(tenant, signal(symbol, events=2))
        fresh, pending = await signals.record(tenant, [s])
        assert fresh == [s] and pending == [order_of(s)]
        positions = await signals.positions(tenant, ["momentum", "other"], symbol)
        assert list(positions) == ["momentum"]
        assert positions["momentum"].quantity == 0
        assert positions["momentum"].last_intent_at == s.generated_at
        # The same vector again: no second signal, no second event; its intent is handed back to place.
        again = replace(_rows(tenant, signal(symbol, s.vector_key)), generated_at=s.generated_at)
        fresh, pending = await signals.record(tenant, [again])
        assert fresh == []
        assert [(p.signal_id, p.client_order_id, p.quantity) for p in pending] == [
            (s.signal_id, s.client_order_id, D(1))
        ]
        assert await outbox(tenant) == [r.event_id for r in s.outbox]

    async def test_a_signal_without_an_intent_reserves_nothing(self, signals: SignalStore) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        hold = _rows(tenant, signal(symbol, direction=HOLD, intent=False))
        assert await signals.record(tenant, [hold]) == ([hold], [])
        assert await signals.positions(tenant, ["momentum"], symbol) == {}
        [(_, _, payload, status)] = await signals.page(tenant, where=SignalFilter(), before=None, limit=10)
        assert (payload, status) == (hold.payload, None)

    async def test_a_batch_inserts_each_key_once_with_the_first_copys_events(
        self, signals: SignalStore, outbox: Outbox
    ) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        before = _rows(tenant, signal(symbol, intent=False))
        assert await signals.record_batch(tenant, [before]) == {before.vector_key}
        first, copy = _rows(tenant, signal(symbol, "k1")), _rows(tenant, signal(symbol, "k1"))
        other = _rows(tenant, signal(symbol, "k2"))
        seen_again = _rows(tenant, signal(symbol, before.vector_key))
        assert await signals.record_batch(tenant, [first, copy, seen_again, other]) == {"k1", "k2"}
        assert await outbox(tenant) == [r.event_id for s in (before, first, other) for r in s.outbox]
        page = await signals.page(tenant, where=SignalFilter(), before=None, limit=10)
        assert sorted(signal_id for _, signal_id, _, _ in page) == sorted(
            s.signal_id for s in (before, first, other)
        )
        # A batch records signals without an intent: the intent fields are not stored.
        assert {status for *_, status in page} == {None}
        assert await signals.positions(tenant, ["momentum"], symbol) == {}

    async def test_an_order_is_recorded_once_and_its_fill_moves_the_position_once(
        self, signals: SignalStore
    ) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        s = _rows(tenant, signal(symbol))
        await signals.record(tenant, [s])
        assert await signals.order_placed(tenant, order_of(s), "o-1", D("1.5")) is True
        assert await signals.order_placed(tenant, order_of(s), "o-1", D("1.5")) is False
        await signals.order_failed(tenant, order_of(s), "too late")  # placed: terminal
        [position] = (await signals.positions(tenant, ["momentum"], symbol)).values()
        assert position.quantity == D("1.5")
        sold = _rows(tenant, signal(symbol))
        await signals.record(tenant, [sold])
        assert await signals.order_placed(tenant, order_of(sold), "o-2", D("-4")) is True
        [position] = (await signals.positions(tenant, ["momentum"], symbol)).values()
        assert (position.quantity, position.last_intent_at) == (D("-2.5"), sold.generated_at)
        statuses = [
            status for *_, status in await signals.page(tenant, where=SignalFilter(), before=None, limit=9)
        ]
        assert statuses == [IntentStatus.PLACED, IntentStatus.PLACED]
        # Placed: never handed back for placement again.
        assert await signals.record(tenant, [replace(s, signal_id=str(uuid7()))]) == ([], [])

    async def test_answers_recorded_together_move_each_intent_once(self, signals: SignalStore) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        bought, sold, refused = (_rows(tenant, signal(symbol)) for _ in range(3))
        other = _rows(tenant, signal(symbol, strategy_id="other"))
        await signals.record(tenant, [bought, sold, refused, other])
        placed = [
            (order_of(bought), "o-1", D("2")),
            (order_of(sold), "o-2", D("-0.5")),
            (order_of(other), "o-3", D("0")),  # nothing filled: no position row
        ]
        recorded = await signals.orders_answered(tenant, placed, [(order_of(refused), "RISK_LIMIT: no")])
        assert recorded == {bought.signal_id, sold.signal_id, other.signal_id}
        # Again (a replayed answer): nothing moves twice, a placed one is not refused after.
        again = await signals.orders_answered(tenant, placed, [(order_of(bought), "late")])
        assert again == set()
        positions = await signals.positions(tenant, ["momentum", "other"], symbol)
        assert positions["momentum"].quantity == D("1.5") and positions["other"].quantity == 0
        page = await signals.page(tenant, where=SignalFilter(), before=None, limit=9)
        statuses = sorted(str(status) for *_, status in page)
        assert statuses == sorted(str(s) for s in [IntentStatus.PLACED] * 3 + [IntentStatus.REFUSED])
        assert await signals.orders_answered(tenant, [], []) == set()

    async def test_a_refused_intent_is_never_placed_or_retried(self, signals: SignalStore) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        s = _rows(tenant, signal(symbol))
        await signals.record(tenant, [s])
        await signals.order_failed(tenant, order_of(s), "RISK_LIMIT: " + "x" * 2000)
        assert await signals.order_placed(tenant, order_of(s), "o-1", D(1)) is False
        assert await signals.record(tenant, [s]) == ([], [])
        [(*_, status)] = await signals.page(tenant, where=SignalFilter(), before=None, limit=9)
        assert status is IntentStatus.REFUSED
        assert (await signals.positions(tenant, ["momentum"], symbol))["momentum"].quantity == 0
        _, pending = await signals.book(tenant, ["momentum"], symbol)
        assert pending == {}

    async def test_due_intents_expire_once_oldest_first_with_their_events(
        self, signals: SignalStore, outbox: Outbox
    ) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        now = datetime.now(UTC)
        old = [_rows(tenant, signal(symbol, at=now - INTENT_TTL - timedelta(minutes=m))) for m in (1, 3, 2)]
        recent = _rows(tenant, signal(symbol, at=now - INTENT_TTL + timedelta(minutes=1)))
        placed = _rows(tenant, signal(symbol, at=now - INTENT_TTL - timedelta(minutes=4)))
        hold = _rows(tenant, signal(symbol, at=now - INTENT_TTL - timedelta(minutes=5), intent=False))
        await signals.record(tenant, [*old, recent, placed, hold])
        await signals.order_placed(tenant, order_of(placed), "o-1", D(1))
        written = len(await outbox(tenant))

        def announce(t: str, intents: Sequence[ExpiredIntent]) -> list[OutboxRow]:
            return [_event(events_pb2.OrderIntentExpired(signal_id=i.signal_id), t) for i in intents]

        first = await signals.expire_due(tenant, now, announce, limit=2)
        # The two oldest due (in no promised order), then the last one.
        assert sorted(i.signal_id for i in first) == sorted([old[1].signal_id, old[2].signal_id]), (
            first,
            [(o.signal_id, o.generated_at) for o in old],
        )
        rest = await signals.expire_due(tenant, now, announce)
        assert [i.signal_id for i in rest] == [old[0].signal_id]
        assert await signals.expire_due(tenant, now, announce) == []
        expired = {i.signal_id: i for i in first + rest}
        assert expired[old[0].signal_id] == ExpiredIntent(
            old[0].signal_id, "momentum", symbol, old[0].client_order_id, 1, D(1), old[0].generated_at, now
        )
        assert len(await outbox(tenant)) == written + 3
        assert await signals.order_placed(tenant, order_of(old[0]), "late", D(1)) is False
        by_id = {
            sid: status
            for _, sid, _, status in await signals.page(tenant, where=SignalFilter(), before=None, limit=9)
        }
        assert by_id[old[0].signal_id] is IntentStatus.EXPIRED
        assert by_id[recent.signal_id] is IntentStatus.PENDING
        assert by_id[placed.signal_id] is IntentStatus.PLACED
        assert by_id[hold.signal_id] is None

    async def test_concurrent_sweeps_expire_each_intent_once(self, signals: SignalStore) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        now = datetime.now(UTC)
        due = [
            _rows(tenant, signal(symbol, at=now - INTENT_TTL - timedelta(seconds=i + 1))) for i in range(6)
        ]
        await signals.record(tenant, due)
        sweeps = await asyncio.gather(*(signals.expire_due(tenant, now, limit=4) for _ in range(3)))
        swept = [i.signal_id for sweep in sweeps for i in sweep]
        assert sorted(swept) == sorted(s.signal_id for s in due)

    async def test_the_book_holds_the_positions_and_the_intents_still_placeable(
        self, signals: SignalStore
    ) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        now = datetime.now(UTC)
        waiting = _rows(tenant, signal(symbol, "waiting", at=now - timedelta(seconds=30)))
        newer = _rows(tenant, signal(symbol, "newer", strategy_id="other", at=now - timedelta(seconds=10)))
        too_old = _rows(tenant, signal(symbol, "too-old", at=now - INTENT_TTL + ANSWER_WITHIN / 2))
        placed = _rows(tenant, signal(symbol, "placed", at=now - timedelta(seconds=20)))
        elsewhere = _rows(tenant, signal(new_symbol(), "elsewhere", at=now - timedelta(seconds=5)))
        await signals.record(tenant, [waiting, newer, too_old, placed, elsewhere])
        await signals.order_placed(tenant, order_of(placed), "o-1", D(1))
        positions, pending = await signals.book(tenant, ["momentum", "other"], symbol)
        assert pending == {"newer": order_of(newer), "waiting": order_of(waiting)}
        assert (positions["momentum"].quantity, positions["momentum"].last_intent_at) == (
            D(1),
            placed.generated_at,
        )
        assert (positions["other"].quantity, positions["other"].last_intent_at) == (D(0), newer.generated_at)
        _, newest = await signals.book(tenant, ["momentum"], symbol, pending_limit=1)
        assert list(newest) == ["newer"]
        _, within = await signals.book(tenant, ["momentum"], symbol, pending_within=timedelta(seconds=20))
        assert list(within) == ["newer"]
        # A vector seen again only hands back an intent that may still be placed.
        assert await signals.record(tenant, [too_old]) == ([], [])

    async def test_pages_go_newest_first_by_keyset_and_filter(self, signals: SignalStore) -> None:
        tenant, symbol, other = new_tenant(), new_symbol(), new_symbol()
        recorded = [
            _rows(tenant, signal(symbol, at=T0 + timedelta(seconds=1))),
            _rows(tenant, signal(symbol, at=T0 + timedelta(seconds=2), direction=SELL)),
            _rows(tenant, signal(symbol, at=T0 + timedelta(seconds=2), strategy_id="other")),  # a tie
            _rows(tenant, signal(other, at=T0 + timedelta(seconds=3))),
            _rows(tenant, signal(symbol, at=T0 + timedelta(seconds=4), intent=False, direction=HOLD)),
        ]
        await signals.record(tenant, recorded)
        newest_first = sorted(recorded, key=lambda s: (s.generated_at, s.signal_id), reverse=True)
        everything = SignalFilter()

        async def ids(
            where: SignalFilter = everything, before: tuple[datetime, str] | None = None, limit: int = 10
        ) -> list[str]:
            return [
                sid for _, sid, _, _ in await signals.page(tenant, where=where, before=before, limit=limit)
            ]

        assert await ids() == [s.signal_id for s in newest_first]
        first = await signals.page(tenant, where=everything, before=None, limit=2)
        assert [(at, sid, payload) for at, sid, payload, _ in first] == [
            (s.generated_at, s.signal_id, s.payload) for s in newest_first[:2]
        ]
        cursor = (first[-1][0], first[-1][1])
        assert await ids(before=cursor, limit=2) == [s.signal_id for s in newest_first[2:4]]
        assert await ids(SignalFilter(symbol=other)) == [recorded[3].signal_id]
        assert await ids(SignalFilter(strategy_id="other")) == [recorded[2].signal_id]
        assert await ids(SignalFilter(direction=SELL)) == [recorded[1].signal_id]
        window = SignalFilter(symbol=symbol, start=T0 + timedelta(seconds=2), end=T0 + timedelta(seconds=4))
        assert sorted(await ids(window)) == sorted([recorded[1].signal_id, recorded[2].signal_id])

    async def test_pruning_deletes_the_older_signals(self, signals: SignalStore) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        old = [_rows(tenant, signal(symbol, at=T0 - timedelta(days=d))) for d in (2, 3)]
        kept = _rows(tenant, signal(symbol, at=T0))
        await signals.record(tenant, [*old, kept])
        assert await signals.prune(tenant, T0 - timedelta(days=1)) == 2
        assert await signals.prune(tenant, T0 - timedelta(days=1)) == 0
        [(_, sid, _, _)] = await signals.page(tenant, where=SignalFilter(), before=None, limit=9)
        assert sid == kept.signal_id

    async def test_tenants_never_see_or_move_each_others_signals(
        self, signals: SignalStore, outbox: Outbox
    ) -> None:
        a, b, symbol = new_tenant(), new_tenant(), new_symbol()
        s = signal(symbol, "shared-key", at=datetime.now(UTC) - INTENT_TTL - timedelta(minutes=1))
        await signals.record(a, [_rows(a, s)])
        assert await signals.page(b, where=SignalFilter(), before=None, limit=9) == []
        assert await signals.positions(b, ["momentum"], symbol) == {}
        assert await signals.order_placed(b, order_of(s), "o-b", D(5)) is False
        assert await signals.expire_due(b, datetime.now(UTC)) == []
        assert await signals.prune(b, datetime.now(UTC)) == 0
        # The same vector key is another tenant's own signal.
        twin = signal(symbol, "shared-key")
        fresh, _ = await signals.record(b, [_rows(b, twin)])
        assert fresh == [_rows(b, twin)]
        assert await signals.order_placed(a, order_of(s), "o-a", D(1)) is True
        assert (await signals.positions(b, ["momentum"], symbol))["momentum"].quantity == 0
        assert len(await outbox(a)) == len(await outbox(b)) == 1

    async def test_a_malformed_signal_id_is_refused(self, signals: SignalStore) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        with pytest.raises(asyncpg.DataError):
            await signals.record(tenant, [replace(signal(symbol), signal_id="not-a-uuid")])
        assert await signals.page(tenant, where=SignalFilter(), before=None, limit=9) == []


class InstrumentDirectorySuite:
    """The instrument universe: unknown until published, then per symbol."""

    async def test_nothing_is_unknown_before_a_universe_is_published(
        self, directory: InstrumentDirectory
    ) -> None:
        assert await directory.listed(["BTC-USD", "NOPE"]) is None

    async def test_each_symbol_is_listed_or_not_in_order(
        self, directory: InstrumentDirectory, publish: Publish
    ) -> None:
        await publish(["BTC-USD", "ETH-USD"])
        assert await directory.listed(["ETH-USD", "NOPE", "BTC-USD"]) == [True, False, True]
