"""Pre-trade risk on the order path without a hop to risk: the
:class:`services.execution.ports.PreTradeRisk` of production.

Execution runs risk's own check (services.risk.check) in this process, on
risk's state in Redis, as its own ACL user: it may read the tenant's limits,
trading state, positions and PnL, and write only the order-rate window and
the check markers (runtime.security.redis_acl). One Redis round trip decides
an approval, instead of a gRPC call to risk (which did the same round trip
behind a hop that cost several times more).

Risk stays the authority. It alone writes what the check reads (a limit or a
kill switch set through risk is seen by the very next check), and every
check that causes something (a denial, a stale quote, a daily loss past the
warning level) is handed to risk's CheckOrder, which decides again and
records it; the order is counted in the rate window once, keyed by its
client order id. When the embedded check cannot read Redis, risk's
CheckOrder decides alone (risk unavailable too: the order is refused, as
before).
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from trading.common.v1 import market_pb2

from services.execution.domain import Order
from services.execution.ports import PreTradeRisk, RiskDecision
from services.execution.wire import quote_from_proto
from services.risk import domain as risk_domain
from services.risk.check import PreTradeCheck

log = logging.getLogger(__name__)


def order_intent(order: Order) -> risk_domain.OrderIntent:
    """What risk checks of an order."""
    return risk_domain.OrderIntent(
        symbol=order.symbol,
        side=order.side,
        quantity=order.quantity,
        order_type=order.type,
        limit_price=order.limit_price,
    )


class EmbeddedPreTradeRisk:
    """Approves in process; anything else goes to `authority` (risk's CheckOrder)."""

    def __init__(self, check: PreTradeCheck, authority: PreTradeRisk) -> None:
        self._check = check
        self._authority = authority

    async def check(self, order: Order) -> RiskDecision:
        try:
            outcome = await self._check.run(
                order.tenant_id,
                order_intent(order),
                order.client_order_id,
                submitted_us=int(order.created_at.timestamp() * 1_000_000),
            )
        except (RedisError, OSError) as err:
            log.warning("embedded risk check failed (%s); asking risk", err)
            return await self._authority.check(order)
        if outcome.needs_authority:
            return await self._authority.check(order)
        raw = outcome.quote_bytes(order.symbol)
        quote = quote_from_proto(market_pb2.Quote.FromString(raw)) if raw else None
        return RiskDecision(approved=True, check_id=outcome.check_id, quote=quote)
