"""Risk's state in process memory, with the observable behaviour of the Redis
adapter (tenant isolation, the rate window and its markers, compare-and-set
limits, state switches, fills applied once, newest clusters only, alert
throttle, outbox rows stored with their change), passing the same suite
(``tests/suites/risk_ports.py``). Expiries follow `clock` (wall time, as
Redis's). No I/O; no method awaits between reading and writing, so each is
atomic to other tasks of the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from trading.common.v1 import market_pb2
from trading.risk.v1 import risk_service_pb2 as pb

from runtime import decimals
from runtime.outbox import OutboxRow
from services.risk import domain
from services.risk.ports import (
    ALERT_INTERVAL_S,
    CHECK_MARKER_TTL_MS,
    FILL_MARKER_TTL_S,
    PNL_TTL_S,
    CheckRead,
    LimitsConflictError,
    StateOutcome,
    StoredCluster,
    StoredLimits,
    utc_day,
)


def _stored(value: Decimal) -> Decimal:
    """`value` as the Redis adapter keeps it: the contract's decimal text."""
    return Decimal(decimals.to_proto(value).value)


@dataclass
class _Limits:
    data: bytes
    version: int
    at_ns: int
    by: str
    rate: int


@dataclass
class _Tenant:
    limits: _Limits | None = None
    status: bytes | None = None
    # check id -> the instant (us) it counts at
    rate: dict[str, int] = field(default_factory=dict)
    rate_expires: float = 0.0
    # client order id -> (check id, expiry)
    checks: dict[str, tuple[str, float]] = field(default_factory=dict)
    positions: dict[str, domain.Position] = field(default_factory=dict)
    # UTC day (YYYYMMDD) -> (realised PnL, expiry)
    pnl: dict[str, tuple[Decimal, float]] = field(default_factory=dict)
    # fill id -> expiry
    fills: dict[str, float] = field(default_factory=dict)
    # (kind, symbol) -> expiry
    alerts: dict[tuple[str, str], float] = field(default_factory=dict)
    outbox: list[OutboxRow] = field(default_factory=list)


class MemoryRiskStore:
    """Every tenant's risk state in dicts; quotes set with :meth:`put_quote`
    (where marketdata writes Redis); outbox rows kept per tenant (:meth:`outbox`)."""

    def __init__(
        self,
        *,
        default_rate: int = domain.DEFAULT_LIMITS.max_orders_per_second,
        time_bound: domain.SubmissionTimeBound | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._default_rate = default_rate
        self._time_bound = time_bound or domain.SubmissionTimeBound()
        self._clock = clock
        self._tenants: dict[str, _Tenant] = {}
        self._quotes: dict[str, bytes] = {}
        self._clusters: dict[str, StoredCluster] = {}
        self._clusters_at = 0

    @property
    def time_bound(self) -> domain.SubmissionTimeBound:
        return self._time_bound

    def _tenant(self, tenant: str) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant()
        return state

    # ---------------------------------------------------------------- test set-up and inspection

    def put_quote(self, symbol: str, quote: market_pb2.Quote) -> None:
        self._quotes[symbol] = quote.SerializeToString()

    def outbox(self, tenant: str) -> list[OutboxRow]:
        """The outbox rows stored for the tenant, in order."""
        state = self._tenants.get(tenant)
        return list(state.outbox) if state is not None else []

    # ---------------------------------------------------------------- check

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
        state = self._tenant(tenant)
        wall = self._clock()
        now_us = int(now_s * 1e6)
        instant = now_us if rate_instant_us is None else rate_instant_us
        bound = self._time_bound
        keep_after = now_us - int(bound.max_back_s * 1e6) - domain.RATE_WINDOW_US
        if state.rate_expires <= wall:
            state.rate.clear()
        state.rate = {c: t for c, t in state.rate.items() if t >= keep_after}
        count = domain.orders_near(state.rate.values(), instant)
        marker = state.checks.get(client_order_id)
        prior = marker[0] if marker is not None and marker[1] > wall else None
        rate = state.limits.rate if state.limits is not None else self._default_rate
        added = consume and prior is None and count < rate
        if added:
            state.rate[check_id] = instant
            state.rate_expires = wall + ((bound.max_back_s + bound.max_ahead_s) * 1000 + 2000) / 1000
            state.checks[client_order_id] = (check_id, wall + CHECK_MARKER_TTL_MS / 1000)
        pnl = state.pnl.get(utc_day(now_s))
        positions = dict(state.positions)
        held = domain.held_symbols(positions.items())
        return CheckRead(
            orders_in_window=count,
            counted=added,
            prior_check_id=prior,
            limits_pb=state.limits.data if state.limits is not None else None,
            status_pb=state.status,
            positions=positions,
            realized_today=pnl[0] if pnl is not None and pnl[1] > wall else domain.ZERO,
            quotes={s: self._quotes.get(s) for s in (symbol, *sorted(held))},
            cluster=self._clusters.get(symbol),
        )

    async def release(self, tenant: str, check_id: str, client_order_id: str) -> None:
        state = self._tenant(tenant)
        state.rate.pop(check_id, None)
        marker = state.checks.get(client_order_id)
        if marker is not None and marker[0] == check_id:
            del state.checks[client_order_id]

    # ---------------------------------------------------------------- limits

    async def get_limits(self, tenant: str) -> StoredLimits | None:
        state = self._tenants.get(tenant)
        if state is None or state.limits is None:
            return None
        stored = state.limits
        return StoredLimits(pb.RiskLimits.FromString(stored.data), stored.version, stored.at_ns, stored.by)

    async def set_limits(
        self,
        tenant: str,
        limits: pb.RiskLimits,
        *,
        expected_version: int,
        actor: str,
        announce: Callable[[StoredLimits], Sequence[OutboxRow]],
    ) -> StoredLimits:
        state = self._tenant(tenant)
        data = limits.SerializeToString(deterministic=True)
        current = state.limits
        version = current.version if current is not None else 0
        if expected_version != 0 and expected_version != version:
            raise LimitsConflictError(version)
        if current is not None and current.data == data:
            previous = pb.RiskLimits.FromString(current.data)
            return StoredLimits(limits, version, current.at_ns, current.by, previous)
        now_ns = time.time_ns()
        previous_limits = pb.RiskLimits.FromString(current.data) if current is not None else None
        change = StoredLimits(limits, version + 1, now_ns, actor, previous_limits, changed=True)
        rows = announce(change)
        state.limits = _Limits(data, version + 1, now_ns, actor, limits.max_orders_per_second)
        state.outbox.extend(rows)
        return change

    # ---------------------------------------------------------------- trading state

    async def get_status(self, tenant: str) -> pb.TradingStatus | None:
        state = self._tenants.get(tenant)
        return pb.TradingStatus.FromString(state.status) if state is not None and state.status else None

    async def set_status(
        self,
        tenant: str,
        status: pb.TradingStatus,
        *,
        announce: Callable[[domain.TradingState], Sequence[OutboxRow]],
        only_from: domain.TradingState | None = None,
    ) -> tuple[StateOutcome, pb.TradingStatus | None]:
        state = self._tenant(tenant)
        before = pb.TradingStatus.FromString(state.status) if state.status else None
        current = before.state if before is not None else domain.TradingState.ACTIVE
        if current == status.state:
            return "same", before
        if only_from is not None and current != only_from:
            return "skipped", before
        rows = announce(domain.TradingState(current))
        state.status = status.SerializeToString()
        state.outbox.extend(rows)
        return "changed", before

    # ---------------------------------------------------------------- positions and PnL

    async def apply_fill(self, tenant: str, fill: domain.Fill) -> bool:
        state = self._tenant(tenant)
        wall = self._clock()
        if state.fills.get(fill.fill_id, 0.0) > wall:
            return False
        key = fill.day.strftime("%Y%m%d")
        after, realized = domain.apply_fill(
            state.positions.get(fill.symbol, domain.Position()), fill.side, fill.quantity, fill.price
        )
        before = state.pnl.get(key)
        pnl = (before[0] if before is not None and before[1] > wall else domain.ZERO) + realized - fill.fee
        state.fills[fill.fill_id] = wall + FILL_MARKER_TTL_S
        if after.quantity == 0:
            state.positions.pop(fill.symbol, None)
        else:
            state.positions[fill.symbol] = domain.Position(
                _stored(after.quantity), _stored(after.average_price)
            )
        state.pnl[key] = (_stored(pnl), wall + PNL_TTL_S)
        return True

    async def positions(self, tenant: str) -> dict[str, domain.Position]:
        state = self._tenants.get(tenant)
        return dict(state.positions) if state is not None else {}

    async def realized_today(self, tenant: str, now_s: float) -> Decimal:
        state = self._tenants.get(tenant)
        pnl = state.pnl.get(utc_day(now_s)) if state is not None else None
        return pnl[0] if pnl is not None and pnl[1] > self._clock() else domain.ZERO

    async def quotes(self, symbols: Sequence[str]) -> dict[str, bytes | None]:
        return {s: self._quotes.get(s) for s in symbols}

    # ---------------------------------------------------------------- correlation clusters

    async def set_clusters(self, computed_at_us: int, clusters: Mapping[str, Sequence[str]]) -> bool:
        if self._clusters_at >= computed_at_us:
            return False
        replaced: dict[str, StoredCluster] = {}
        for cluster_id, symbols in sorted(clusters.items()):
            cluster = StoredCluster(cluster_id, frozenset(symbols))
            for symbol in sorted(symbols):
                replaced[symbol] = cluster
        self._clusters, self._clusters_at = replaced, computed_at_us
        return True

    async def cluster_of(self, symbol: str) -> StoredCluster | None:
        return self._clusters.get(symbol)

    async def alert_once(self, tenant: str, kind: str, symbol: str, rows: Sequence[OutboxRow]) -> bool:
        state = self._tenant(tenant)
        wall = self._clock()
        key = (kind, symbol or "-")
        if state.alerts.get(key, 0.0) > wall:
            return False
        state.alerts[key] = wall + ALERT_INTERVAL_S
        state.outbox.extend(rows)
        return True

    async def add_events(self, tenant: str, rows: Sequence[OutboxRow]) -> None:
        self._tenant(tenant).outbox.extend(rows)
