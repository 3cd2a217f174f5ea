"""The pre-trade check as a library: one read of risk's state, the pure checks.

Risk's CheckOrder runs it, and so does execution's order path, in its own
process, on the same state (services.execution.adapters.risk): an approval
needs no gRPC hop to risk. Risk stays the authority: it alone writes the
limits, the trading state (kill switch), positions and PnL that the check
reads, and it alone records what a check causes (rejection events, alerts,
the automatic switch to REDUCING). So an embedded caller hands every check
that :attr:`CheckOutcome.needs_authority` to risk's CheckOrder, which decides
again and records; the counting of the order in the rate window is keyed by
its client order id, so the second check never counts it twice.

A denied check is taken back out of the rate window here, before returning,
whoever runs it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from trading.risk.v1 import risk_service_pb2 as pb

from runtime.messaging.envelope import uuid7
from services.risk import domain
from services.risk.ports import CheckRead, CheckState
from services.risk.wire import limits_to_domain, quote_view

# Parsed limits kept by their stored bytes (bounded: cleared when full).
_LIMITS_CACHE_SIZE = 10_000


def cluster_holdings(
    read: CheckRead, symbol: str, marks: Mapping[str, Decimal | None]
) -> domain.ClusterHoldings | None:
    """The order's correlation cluster with the tenant's positions in its
    other instruments, each valued at its mark (its entry price without one)."""
    cluster = read.cluster
    if cluster is None or symbol not in cluster.symbols:
        return None
    holdings: dict[str, tuple[Decimal, Decimal]] = {}
    for held, position in read.positions.items():
        if held in cluster.symbols and held != symbol and position.quantity != 0:
            mark = marks.get(held)
            holdings[held] = (position.quantity, position.average_price if mark is None else mark)
    return domain.ClusterHoldings(cluster.cluster_id, cluster.symbols, holdings)


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One check: its id, result and what it was decided on."""

    check_id: str
    result: domain.CheckResult
    state: domain.TradingState
    read: CheckRead
    limits: domain.Limits
    daily_pnl: Decimal
    checked_at_ns: int

    @property
    def approved(self) -> bool:
        return self.result.approved

    @property
    def needs_authority(self) -> bool:
        """Whether risk must see this check itself: a denial (its rejection
        event), a stale quote (an alert) or a daily loss past the warning
        level (the PnL event and the automatic switch to REDUCING).
        A plain approval causes nothing."""
        return (
            not self.result.approved
            or self.result.stale_quote
            or domain.loss_level(self.daily_pnl, self.limits.daily_loss_limit) is not domain.LossLevel.OK
        )

    def quote_bytes(self, symbol: str) -> bytes | None:
        """The serialized last quote of `symbol` the check read (None: no quote)."""
        return self.read.quotes.get(symbol)


class PreTradeCheck:
    """Runs checks on a :class:`~services.risk.ports.CheckState`."""

    def __init__(self, state: CheckState) -> None:
        self._state = state
        # Parsing protobuf + Decimals on every check would cost more than the rest of it.
        self._limits_cache: dict[bytes, domain.Limits] = {}

    def limits(self, data: bytes | None) -> domain.Limits:
        """The domain limits of stored RiskLimits bytes (the defaults for none)."""
        if data is None:
            return domain.DEFAULT_LIMITS
        limits = self._limits_cache.get(data)
        if limits is None:
            if len(self._limits_cache) > _LIMITS_CACHE_SIZE:
                self._limits_cache.clear()
            limits = self._limits_cache[data] = limits_to_domain(pb.RiskLimits.FromString(data))
        return limits

    async def run(
        self,
        tenant: str,
        order: domain.OrderIntent,
        client_order_id: str,
        *,
        submitted_us: int | None,
        consume: bool = True,
    ) -> CheckOutcome:
        """Check `order` of `tenant`; when `consume`, count it in the rate
        window (once per client order id) unless it is denied."""
        check_id = str(uuid7())
        now_ns = time.time_ns()
        read = await self._state.read_for_check(
            tenant,
            order.symbol,
            check_id,
            client_order_id,
            consume=consume,
            now_s=now_ns / 1e9,
            rate_instant_us=domain.rate_instant_us(submitted_us, now_ns // 1000, self._state.time_bound),
        )
        if read.prior_check_id is not None:
            check_id = read.prior_check_id  # a retried check of a counted order keeps its id
        limits = self.limits(read.limits_pb)
        status = pb.TradingStatus.FromString(read.status_pb) if read.status_pb else None
        state = domain.TradingState(status.state) if status is not None else domain.TradingState.ACTIVE
        quotes = {s: quote_view(v, now_ns) for s, v in read.quotes.items()}
        marks = {s: (q.mark() if q is not None else None) for s, q in quotes.items()}
        pnl = domain.daily_pnl(read.realized_today, read.positions, marks)
        snapshot = domain.RiskSnapshot(
            limits=limits,
            state=state,
            position=read.positions.get(order.symbol, domain.Position()).quantity,
            orders_in_window=read.orders_in_window,
            daily_pnl=pnl,
            quote=quotes.get(order.symbol),
            already_counted=read.prior_check_id is not None,
            cluster=cluster_holdings(read, order.symbol, marks),
        )
        result = domain.check_order(order, snapshot)
        if not result.approved and read.counted:
            await self._state.release(tenant, check_id, client_order_id)
        return CheckOutcome(check_id, result, state, read, limits, pnl, now_ns)
