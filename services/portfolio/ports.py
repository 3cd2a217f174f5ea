"""What the portfolio's servicer, views and fill consumer depend on: the books
(:class:`BookStore`) and the last quotes (:class:`QuoteCache`), with the
values they hold. Adapters: :mod:`services.portfolio.adapters.postgres`
(books), :mod:`services.portfolio.adapters.redis` (quotes) and
:mod:`services.portfolio.adapters.memory` (both, in process); all pass the
suites in ``tests/suites/portfolio_ports.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from runtime.outbox import OutboxRow
from services.portfolio import domain


@dataclass(frozen=True, slots=True)
class Account:
    """A tenant's cash; `version` counts the fills applied to its books."""

    currency: str
    cash: Decimal
    version: int


@dataclass(frozen=True, slots=True)
class Books:
    """A tenant's account and positions (all of them, flat ones included)."""

    account: Account
    positions: tuple[domain.Position, ...]
    updated_at: dict[str, datetime]


@dataclass(frozen=True, slots=True)
class AppliedFill:
    """What one newly applied fill did (None is returned for a duplicate)."""

    outcome: domain.FillOutcome
    account: Account
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FillRecord:
    """The identity of a fill event, recorded with the fill it applied."""

    event_id: str
    execution_id: str
    order_id: str


# Builds the outbox rows announcing an applied fill (stored with it).
Announce = Callable[[AppliedFill], Sequence[OutboxRow]]


class BookStore(Protocol):
    """Every tenant's books: cash account, positions, and the fill events applied.

    Tenancy: everything is per tenant id; one tenant's fills, account and
    positions are never seen by or applied to another. Event and execution
    ids are unique per tenant only (another tenant may reuse them).
    """

    @property
    def starting_cash(self) -> Decimal:
        """A tenant's cash before its first fill."""
        ...

    async def apply_fill(
        self,
        tenant_id: str,
        record: FillRecord,
        fill: domain.Fill,
        *,
        now: datetime | None = None,
        announce: Announce | None = None,
    ) -> AppliedFill | None:
        """Apply one fill atomically: record the event, update the position
        (:func:`services.portfolio.domain.apply_fill`) and the cash, bump the
        account version, and store `announce`'s outbox rows with them.

        Idempotent: None, changing nothing (and not calling `announce`), when
        the tenant already applied this event id or this execution id. If
        `announce` raises, nothing is stored and the exception propagates.
        The account is created at :attr:`starting_cash` by its first fill;
        `now` (default: the current time) becomes the position's updated_at.
        """
        ...

    async def books(self, tenant_id: str, *, symbol: str | None = None) -> Books:
        """The tenant's account (at :attr:`starting_cash`, version 0, before
        any fill) and positions, flat ones included, ordered by symbol; only
        `symbol`'s when given (none when it was never traded)."""
        ...


class QuoteCache(Protocol):
    """The last quote of each symbol (market-wide: no tenant), as marks."""

    async def marks(self, symbols: Iterable[str]) -> dict[str, domain.Mark]:
        """The marks (:func:`services.portfolio.domain.mark_price` of the quote:
        mid, else last trade; timed by the exchange time, else the receive
        time) of the `symbols` that have a usable quote. A symbol without a
        quote, or whose quote has no price or cannot be read, is left out
        rather than failing the call."""
        ...
