"""What execution's servicer and paper matcher depend on, with the values they hold.

- :class:`OrderStore`: orders, their executions and the outbox rows of their
  events, one atomic change at a time.
- :class:`MarketQuotes`: the instrument universe and the last quote of each
  symbol (market-wide, written by marketdata).
- :class:`PreTradeRisk`: the pre-trade check of an order (risk's CheckOrder).
- :class:`Venue`: where accepted orders go.

Adapters: :mod:`services.execution.adapters.postgres` (orders),
:mod:`services.execution.adapters.redis` (quotes),
:mod:`services.execution.adapters.grpc` (risk),
:mod:`services.execution.adapters.memory` (orders and quotes, in process; it
passes the same suites, ``tests/suites/execution_ports.py``), and
:class:`services.execution.venue.PaperVenue` (the venue).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from google.rpc import status_pb2

from runtime.outbox import OutboxRow
from services.execution.domain import Order, OrderEvent, OrderInput, Quote

# ---------------------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """An order as stored, with what the domain object does not carry."""

    order: Order
    request_hash: bytes
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """ListOrders filters; empty/None means "any"."""

    statuses: tuple[int, ...] = ()
    symbol: str | None = None
    strategy_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position of ListOrders: the last row's (created_at, order_id)."""

    created_at: datetime
    order_id: str

    def encode(self) -> dict[str, Any]:
        return {"c": self.created_at.isoformat(), "o": self.order_id}

    @classmethod
    def decode(cls, raw: dict[str, Any]) -> Cursor:
        """Raises ValueError on anything this server did not write."""
        created, order_id = raw.get("c"), raw.get("o")
        if not isinstance(created, str) or not isinstance(order_id, str):
            raise ValueError("bad cursor")
        return cls(datetime.fromisoformat(created), _uuid_text(order_id))


def _uuid_text(value: str) -> str:
    return str(uuid.UUID(value))


# Decides what happens to a locked order: (order, its expiry) -> inputs to apply.
Decide = Callable[[Order, "datetime | None"], Sequence[OrderInput]]
# Builds the outbox rows of the events a change emitted.
ToOutbox = Callable[[Sequence[OrderEvent]], Sequence[OutboxRow]]


class OrderStore(Protocol):
    """Every tenant's orders, their executions (fills) and execution's outbox.

    Tenancy: the tenant-scoped methods (:meth:`create` by the order's tenant,
    :meth:`get`, :meth:`update`, :meth:`page`, :meth:`open_orders`) only ever
    see or change the given tenant's orders; another tenant's order is absent
    (None, or not listed), never an error. The background scans
    (:meth:`marketable`, :meth:`working_symbols`, :meth:`due_expiries`) are
    cross-tenant and answer (tenant, order id) pairs.

    Atomicity: every change stores the order, its new executions and its
    outbox rows together or not at all.

    Ids: order ids are UUIDs (text, canonical lower case when read back); an
    order id that is not a UUID raises ValueError. ``client_order_id`` is
    unique per tenant (another tenant may use the same one).

    Snapshots: the orders :meth:`get`, :meth:`page` and :meth:`open_orders`
    answer do not carry ``execution_ids``; :meth:`update` hands ``decide``
    the order with them (so a redelivered fill is refused).
    """

    async def create(
        self,
        order: Order,
        events: Sequence[OrderEvent],
        outbox: Sequence[OutboxRow],
        *,
        request_hash: bytes,
        expires_at: datetime | None,
        risk_check_id: str = "",
    ) -> StoredOrder | None:
        """Insert a placed order (already in its state after placement) with the
        executions of its events' fills and the outbox rows. Idempotent by
        (tenant, client_order_id): None, storing nothing, when the tenant
        already has an order with this client_order_id; of concurrent
        identical requests exactly one inserts."""
        ...

    async def get(
        self, tenant_id: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> StoredOrder | None:
        """One order of the tenant by either id (order_id when given); None if the tenant has none."""
        ...

    async def update(
        self,
        tenant_id: str,
        decide: Decide,
        to_outbox: ToOutbox,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> tuple[Order, tuple[OrderEvent, ...]] | None:
        """Change one order atomically: with the order held against concurrent
        changes, `decide` chooses the inputs, the domain applies them
        (:func:`services.execution.domain.apply_all`) and the result is stored
        with its executions and `to_outbox`'s rows. Answers the order after
        the change and the events emitted: the stored order and () when
        `decide` chose nothing (nothing is written); None when the tenant has
        no such order. An exception from `decide`, `to_outbox` or the domain
        (DuplicateFill, InvalidTransition, ...) propagates and changes nothing."""
        ...

    async def page(
        self, tenant_id: str, *, where: OrderFilter, after: Cursor | None, limit: int
    ) -> list[Order]:
        """Up to `limit` of the tenant's orders matching `where`, newest first
        (created_at, then order id, descending), strictly after `after`.
        ``created_from`` is inclusive, ``created_to`` exclusive."""
        ...

    async def open_orders(self, tenant_id: str, symbol: str | None) -> list[Order]:
        """The tenant's open (not terminal) orders, of `symbol` when given, oldest first."""
        ...

    async def marketable(
        self, symbol: str, *, bid: Decimal | None, ask: Decimal | None, limit: int = 500
    ) -> list[tuple[str, str]]:
        """(tenant, order id) of working orders of `symbol` (any tenant) that
        this top of book would trade, oldest first: buys at or above the ask,
        sells at or below the bid, market orders whenever that side has a
        price. None: no such side."""
        ...

    async def working_symbols(self) -> list[str]:
        """Each symbol that has working orders (any tenant), once, in no particular order."""
        ...

    async def due_expiries(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(tenant, order id) of open orders with an expiry at or before `now`
        (accepted, partially filled or pending cancel), earliest expiry first."""
        ...


# ---------------------------------------------------------------------------- market data


class MarketQuotes(Protocol):
    """Marketdata's shared cache, read-only: the listed instruments and each
    symbol's last quote. Market-wide (no tenant)."""

    async def lists(self, symbol: str) -> bool:
        """True for a listed symbol, or one that has a quote; also True while
        no instrument set was ever published (nothing to check against)."""
        ...

    async def last_quote(self, symbol: str) -> Quote | None:
        """The symbol's last quote; None before its first one."""
        ...


# ---------------------------------------------------------------------------- risk


@dataclass(frozen=True, slots=True)
class RiskDenial:
    """One failed check: its stable code (e.g. ``RISK_MAX_NOTIONAL_EXCEEDED``) and why."""

    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """Risk's answer: approved, or the denials (in risk's order; may be empty
    when risk denied without saying why)."""

    approved: bool
    check_id: str = ""
    denials: tuple[RiskDenial, ...] = ()
    # The symbol's last quote the check was decided on, when it read one: the
    # venue fills at the market risk approved (and needs no read of its own).
    quote: Quote | None = None


class RiskCheckFailed(Exception):
    """Risk gave no decision."""


class RiskUnavailable(RiskCheckFailed):
    """Risk could not answer (down, too slow, overloaded): retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RiskRequestRefused(RiskCheckFailed):
    """Risk refused the request itself (e.g. INVALID_ARGUMENT); `status` is its
    answer, to pass on to the caller."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


class PreTradeRisk(Protocol):
    """The pre-trade check of the tenant's order (the tenant is the caller's)."""

    async def check(self, order: Order) -> RiskDecision:
        """Risk's decision on `order`. Checks are keyed by client order id on
        risk's side, so checking the same order again never counts twice.
        Raises :class:`RiskUnavailable` or :class:`RiskRequestRefused`."""
        ...


# ---------------------------------------------------------------------------- venue


class Venue(Protocol):
    """A venue adapter. It answers in the domain's inputs (Accept, ReportFill,
    Cancel, ...), which the caller applies and stores: the transition table
    stays the only place that decides what happens to an order."""

    name: str

    async def lists(self, symbol: str) -> bool:
        """Whether the venue trades `symbol` at all (unknown -> NOT_FOUND, nothing stored)."""
        ...

    def session_end(self, order: Order) -> datetime | None:
        """When a DAY order expires at this venue; None for other orders."""
        ...

    async def submit(self, order: Order, at: datetime, quote: Quote | None = None) -> Sequence[OrderInput]:
        """Send a NEW order that passed risk: its acknowledgement (Accept or
        Reject) and whatever happened at once (fills, IOC/FOK cancels).
        `quote`: the market the order was checked against, when known (a
        simulated venue trades at it; a real one ignores it)."""
        ...

    async def cancel(self, order: Order, at: datetime) -> Sequence[OrderInput]:
        """Ask to cancel an order now PENDING_CANCEL (asking again is harmless):
        Cancel when the venue confirms at once, nothing when it will report later."""
        ...

    def on_market(
        self, order: Order, quote: Quote, at: datetime, expires_at: datetime | None
    ) -> Sequence[OrderInput]:
        """What a new quote does to a resting order (fills, expiry)."""
        ...
