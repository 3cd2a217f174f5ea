"""What risk's servicer, events and consumers depend on: :class:`RiskStore`,
the state every replica shares, with the values it returns. Adapters:
:mod:`services.risk.adapters.redis` (production) and
:mod:`services.risk.adapters.memory` (in process); both pass the suite in
``tests/suites/risk_ports.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal, Protocol

from trading.risk.v1 import risk_service_pb2 as pb

from runtime.outbox import OutboxRow
from services.risk import domain

# How long the store remembers, as the contract and the fill consumer need it.
CHECK_MARKER_TTL_MS: Final = 300_000  # a counted check of a client order id
FILL_MARKER_TTL_S: Final = 7 * 86_400  # an applied fill id
PNL_TTL_S: Final = 3 * 86_400  # a UTC day's realised PnL
ALERT_INTERVAL_S: Final = 60  # the contract's alert throttle, per kind and symbol

# What a trading-state switch did: stored, already the target, or refused by `only_from`.
StateOutcome = Literal["changed", "same", "skipped"]


class LimitsConflictError(Exception):
    """SetLimits with an expected version that is not the stored one."""

    def __init__(self, stored_version: int) -> None:
        super().__init__(f"stored limits have version {stored_version}")
        self.stored_version = stored_version


def utc_day(ts_s: float) -> str:
    """The UTC day of a Unix time, as the daily PnL is keyed (YYYYMMDD)."""
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y%m%d")


@dataclass(frozen=True, slots=True)
class StoredCluster:
    """A correlation cluster as risk stores it."""

    cluster_id: str
    symbols: frozenset[str]


@dataclass(frozen=True, slots=True)
class CheckRead:
    """What one check reads of the store, at one instant."""

    orders_in_window: int
    counted: bool  # this call added the order to the window
    prior_check_id: str | None  # an earlier check of the same order already counted it
    limits_pb: bytes | None
    status_pb: bytes | None
    positions: Mapping[str, domain.Position]
    realized_today: Decimal
    # Serialized Quote (None: no quote) of the order's symbol and of every held symbol, at least.
    quotes: Mapping[str, bytes | None]
    # The correlation cluster of the order's symbol; None when it is in none.
    cluster: StoredCluster | None = None


@dataclass(frozen=True, slots=True)
class StoredLimits:
    limits: pb.RiskLimits
    version: int
    updated_at_ns: int
    updated_by: str
    previous: pb.RiskLimits | None = None
    changed: bool = False


class CheckState(Protocol):
    """What a pre-trade check reads and counts (services.risk.check): the part
    of :class:`RiskStore` that execution's order path uses too, on the same
    state, with its own store login (read-only but for the rate window)."""

    @property
    def time_bound(self) -> domain.SubmissionTimeBound:
        """Within which a claimed submission time is believed (see domain)."""
        ...

    async def read_for_check(
        self,
        tenant: str,
        symbol: str,
        check_id: str,
        client_order_id: str,
        *,
        consume: bool,
        now_s: float,
        rate_instant_us: int | None = None,
    ) -> CheckRead:
        """Everything a check of `symbol` reads, atomically with the counting.

        The rate window: ``orders_in_window`` is :func:`domain.orders_near` of
        the tenant's counted orders at `rate_instant_us` (default `now_s`).
        When `consume`, the window has room (fewer than the stored limits'
        max_orders_per_second, else the store's default rate) and no earlier
        check counted this `client_order_id` (in the last 5 minutes), the
        order is counted under `check_id` (``counted``); an earlier check's
        id comes back as ``prior_check_id`` and nothing is counted again.
        ``realized_today`` is the realised PnL of `now_s`'s UTC day.
        """
        ...

    async def release(self, tenant: str, check_id: str, client_order_id: str) -> None:
        """Take a counted check back out of the rate window (it was denied),
        and forget it as the order's counted check; no-op for an unknown id."""
        ...


class RiskStore(CheckState, Protocol):
    """Risk's shared state: per tenant its limits, trading state, order-rate
    window, positions and daily realised PnL, alert throttles and outbox of
    events; market-wide the last quotes (marketdata's) and the correlation
    clusters (analytics').

    Tenancy: whatever is per tenant is never read or changed through another
    tenant id. Every change that is announced (limits, state, alerts) stores
    its outbox rows with it, all or nothing; unchanged means no rows.
    """

    async def get_limits(self, tenant: str) -> StoredLimits | None:
        """The tenant's stored limits; None before its first SetLimits."""
        ...

    async def set_limits(
        self,
        tenant: str,
        limits: pb.RiskLimits,
        *,
        expected_version: int,
        actor: str,
        announce: Callable[[StoredLimits], Sequence[OutboxRow]],
    ) -> StoredLimits:
        """Store `limits` (their deterministic serialization) as version + 1,
        with the outbox rows `announce` makes of the change (``previous``: the
        limits replaced, ``changed=True``).

        Raises :class:`LimitsConflictError` when `expected_version` is not 0
        and not the stored version. Equal limits change nothing: the stored
        version, time and actor come back with ``changed=False`` and
        ``previous`` the stored limits, and no rows are stored."""
        ...

    async def get_status(self, tenant: str) -> pb.TradingStatus | None:
        """The tenant's trading status; None when it was never switched (ACTIVE)."""
        ...

    async def set_status(
        self,
        tenant: str,
        status: pb.TradingStatus,
        *,
        announce: Callable[[domain.TradingState], Sequence[OutboxRow]],
        only_from: domain.TradingState | None = None,
    ) -> tuple[StateOutcome, pb.TradingStatus | None]:
        """Switch to `status` unless the tenant already is in its state
        ("same": nothing changes, the first reason stays) or, with
        `only_from`, is in another state than that ("skipped"). A change
        ("changed") is stored with the rows `announce` makes of the state it
        replaced. Returns the outcome and the status before (None: never switched)."""
        ...

    async def apply_fill(self, tenant: str, fill: domain.Fill) -> bool:
        """Apply `fill` exactly once (False: its `fill_id` was applied, within 7
        days): the position by :func:`domain.apply_fill` (a flat position is
        removed), `day`'s realised PnL by the realised PnL minus `fee`; amounts
        are kept at the contract's 12 fractional digits. Concurrent
        deliveries of one fill apply it once."""
        ...

    async def positions(self, tenant: str) -> dict[str, domain.Position]:
        """The tenant's open positions by symbol."""
        ...

    async def realized_today(self, tenant: str, now_s: float) -> Decimal:
        """Realised PnL, net of fees, of `now_s`'s UTC day (0 without fills)."""
        ...

    async def quotes(self, symbols: Sequence[str]) -> dict[str, bytes | None]:
        """The last quote (serialized) of each symbol; None for one without."""
        ...

    async def set_clusters(self, computed_at_us: int, clusters: Mapping[str, Sequence[str]]) -> bool:
        """Replace the clusters (cluster id -> its symbols) with those computed
        at `computed_at_us`, unless newer or the same ones are stored; True
        when they were replaced."""
        ...

    async def cluster_of(self, symbol: str) -> StoredCluster | None:
        """The stored cluster `symbol` is in; None when in none."""
        ...

    async def alert_once(self, tenant: str, kind: str, symbol: str, rows: Sequence[OutboxRow]) -> bool:
        """Store the alert's outbox rows, at most once per kind and symbol per
        minute (the contract's throttle); False when throttled."""
        ...

    async def add_events(self, tenant: str, rows: Sequence[OutboxRow]) -> None:
        """Append outbox rows of an event that is itself the fact (a rejection)."""
        ...
