"""The paper matcher's bookkeeping of which symbols have working orders: a
tick of a symbol without any costs no database scan (pure logic: the store
here only records which scans were asked for)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.execution.domain import EventKind, OrderEvent, OrderStatus, Quote
from services.execution.venue import Matcher


class RecordingStore:
    def __init__(self, working: list[str]) -> None:
        self.working = working
        self.scanned: list[str] = []

    async def due_expiries(self, now: Any) -> list[tuple[str, str]]:
        return []

    async def working_symbols(self) -> list[str]:
        return list(self.working)

    async def marketable(self, symbol: str, **_: Any) -> list[tuple[str, str]]:
        self.scanned.append(symbol)
        return []


class NoQuotes:
    async def last_quote(self, symbol: str) -> None:
        return None


def quote(symbol: str) -> Quote:
    return Quote(symbol, Decimal("99"), Decimal("1"), Decimal("100"), Decimal("1"))


class Resting:
    """The part of an order the matcher reads from an event."""

    def __init__(self, symbol: str, status: OrderStatus) -> None:
        self.symbol = symbol
        self.is_working = status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


def event(symbol: str, status: OrderStatus) -> OrderEvent:
    return OrderEvent(EventKind.ACCEPTED, Resting(symbol, status), OrderStatus.NEW)  # type: ignore[arg-type]


async def test_ticks_of_symbols_without_working_orders_cost_no_scan() -> None:
    store = RecordingStore(working=["AAA"])
    matcher = Matcher(store, NoQuotes(), None, None, lambda _e: None)  # type: ignore[arg-type]
    await matcher.match(quote("BBB"))  # before the first sweep: unknown, so scanned
    await matcher.sweep()
    await matcher.match(quote("AAA"))
    await matcher.match(quote("BBB"))  # no working orders: skipped
    assert store.scanned == ["BBB", "AAA"]
    matcher.note([event("BBB", OrderStatus.FILLED)])  # not resting: still skipped
    await matcher.match(quote("BBB"))
    matcher.note([event("BBB", OrderStatus.ACCEPTED)])  # rests here: matchable at once
    await matcher.match(quote("BBB"))
    assert store.scanned == ["BBB", "AAA", "BBB"]
