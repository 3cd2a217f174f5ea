"""What decision keeps in memory per (tenant, symbol): the strategies'
positions, last intents and pending intents (:class:`PositionBook`), and the
vector keys it settled recently (:class:`RecentKeys`). engine.py says what
this trades against PostgreSQL and why it is safe with replicas."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import Counter

from services.decision.domain import Direction, Side
from services.decision.ports import PendingOrder, PositionState, SignalStore

BOOK_LOADS = Counter(
    "trading_decision_book_loads_total",
    "Loads of a (tenant, symbol) book of positions and pending intents from PostgreSQL.",
)


FLAT = PositionState(Decimal(0), None)  # a strategy without a position row


@dataclass(slots=True)
class SymbolBook:
    """One tenant's strategies in one symbol, as this process knows them."""

    positions: dict[str, PositionState]  # by strategy id
    pending: dict[str, PendingOrder]  # intents not known to be placed, by vector key
    placing: dict[str, PendingOrder] = field(default_factory=dict)  # PlaceOrder in flight, by key
    stale: bool = False  # reload before the next use (once nothing is in flight)

    def position_for(self, strategy_id: str, direction: Direction) -> Decimal:
        """The strategy's position as if every order in flight filled, on the
        side `direction` would trade: what the position limit is checked
        against while placements are still out."""
        quantity = self.positions.get(strategy_id, FLAT).quantity
        side = int(Side.BUY) if direction is Direction.BUY else int(Side.SELL)
        for order in self.placing.values():
            if order.strategy_id == strategy_id and order.side == side:
                quantity += order.quantity if side == int(Side.BUY) else -order.quantity
        return quantity


class PositionBook:
    """Books per (tenant, symbol): loaded from PostgreSQL on first use, kept
    up to date by this process, marked stale by :meth:`invalidate` (on every
    strategy-cache reload) so that other replicas' changes are read again.

    A (tenant, symbol) book is read and changed by its symbol's lane, one
    vector at a time, and by that lane's placements in flight. A stale book is
    reloaded by the lane's next vector once no placement of it is in flight
    (its fill and its row are then both in PostgreSQL or both not yet)."""

    def __init__(self, store: SignalStore) -> None:
        self._store = store
        self._books: dict[tuple[str, str], SymbolBook] = {}

    async def get(self, tenant: str, symbol: str, strategy_ids: Sequence[str]) -> SymbolBook:
        book = self._books.get((tenant, symbol))
        missing = [s for s in strategy_ids if book is None or s not in book.positions]
        if book is not None and book.placing:
            if missing:  # a strategy new to the book: its position only, the rest is in use
                loaded = await self._store.positions(tenant, missing, symbol)
                book.positions.update({s: loaded.get(s, FLAT) for s in missing})
            return book
        if book is None or book.stale or missing:
            positions, pending = await self._store.book(tenant, strategy_ids, symbol)
            BOOK_LOADS.inc()
            book = SymbolBook({s: positions.get(s, FLAT) for s in strategy_ids}, pending)
            self._books[(tenant, symbol)] = book
        return book

    def drop_pending(self, tenant: str, symbol: str, key: str) -> None:
        """Forget a pending intent (it expired); a book not loaded has nothing to forget."""
        book = self._books.get((tenant, symbol))
        if book is not None:
            book.pending.pop(key, None)

    def invalidate(self) -> None:
        for book in self._books.values():
            book.stale = True


class RecentKeys:
    """The last `capacity` vector keys this process recorded and settled (no
    intent, or an intent placed or refused): a bounded set, oldest out first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
