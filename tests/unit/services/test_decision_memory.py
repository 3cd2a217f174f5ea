"""What decision keeps in memory: the bounded set of recent vector keys, the
position a strategy's limit is checked against while orders are in flight,
and the strategy cache telling its followers the traded symbols."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.decision.adapters.memory import MemoryStrategyStore
from services.decision.book import RecentKeys, SymbolBook
from services.decision.domain import Direction, Side
from services.decision.engine import StrategyCache
from services.decision.ports import PendingOrder, PositionState, StrategyRow


def test_recent_keys_forget_the_oldest_beyond_their_capacity() -> None:
    keys = RecentKeys(capacity=3)
    for key in ("a", "b", "c"):
        keys.add(key)
    keys.add("a")  # seen again: now the newest
    keys.add("d")  # b, the oldest, goes
    assert [k in keys for k in ("a", "b", "c", "d")] == [True, False, True, True]
    assert len(keys) == 3


def _row(tenant: str, strategy_id: str, symbols: tuple[str, ...]) -> StrategyRow:
    now = datetime.now(UTC)
    return StrategyRow(
        tenant_id=tenant, strategy_id=strategy_id, name="n", description="", symbols=symbols, enabled=True,
        max_position=Decimal(1), fixed_quantity=Decimal(1), model_ids=("m",), signal_threshold=0.5,
        cooldown_ms=0, version=1, created_at=now, updated_at=now, updated_by="u",
    )  # fmt: skip


class _Strategies(MemoryStrategyStore):
    """Enabled strategies from a dict (the cache's logic, no database)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[StrategyRow]] = {}

    async def tenants(self) -> list[str]:
        return sorted(self.rows)

    async def enabled(self, tenant_id: str) -> list[StrategyRow]:
        return self.rows.get(tenant_id, [])


async def test_followers_get_the_traded_symbols_after_every_load_and_failures_are_contained() -> None:
    store = _Strategies()
    store.rows = {"t1": [_row("t1", "s", ("AAA", "BBB"))]}
    cache = StrategyCache(store, refresh_s=3600)
    await cache.reload()
    told: list[frozenset[str]] = []
    reloads: list[int] = []

    async def follower(symbols: frozenset[str]) -> None:
        told.append(symbols)

    async def broken(symbols: frozenset[str]) -> None:
        raise RuntimeError("NATS is down")

    with pytest.raises(RuntimeError):  # the first call's failure is the caller's (start-up fails)
        await cache.follow(broken)
    await cache.follow(follower)  # later failures of `broken` do not stop the others
    cache.on_reload(lambda: reloads.append(1))
    store.rows["t2"] = [_row("t2", "x", ("CCC",))]
    await cache.reload_tenant("t2")  # a local change: followers told, no full reload
    store.rows["t1"] = []
    await cache.reload()
    assert told == [frozenset({"AAA", "BBB"}), frozenset({"AAA", "BBB", "CCC"}), frozenset({"CCC"})]
    assert reloads == [1] and cache.symbols() == frozenset({"CCC"})


def test_the_position_limit_is_checked_as_if_the_orders_in_flight_filled() -> None:
    def order(key: str, strategy_id: str, side: Side, quantity: str) -> PendingOrder:
        return PendingOrder(key, strategy_id, "AAA", key, int(side), Decimal(quantity), b"")

    book = SymbolBook({"s": PositionState(Decimal(2), None)}, {})
    book.placing = {
        "k1": order("k1", "s", Side.BUY, "1"),
        "k2": order("k2", "s", Side.BUY, "0.5"),
        "k3": order("k3", "s", Side.SELL, "4"),
        "k4": order("k4", "other", Side.BUY, "9"),
    }
    # Buying: the buys out may all fill (and the sell may not); selling: the other way round.
    assert book.position_for("s", Direction.BUY) == Decimal("3.5")
    assert book.position_for("s", Direction.SELL) == Decimal(-2)
    assert book.position_for("new", Direction.BUY) == 0
