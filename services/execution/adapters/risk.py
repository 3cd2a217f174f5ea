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

Only while risk is up: the positions and PnL the check reads are kept by
risk's fill consumer, so with risk down they would go stale. A
:class:`RiskLiveness` probes risk's health twice a second; when risk was not
seen SERVING lately, every check goes to CheckOrder, which then fails as
RISK_UNAVAILABLE and nothing is placed, exactly as without the embedding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
from redis.exceptions import RedisError
from trading.common.v1 import market_pb2

from runtime.health import probe
from runtime.tasks import stop_task
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


RISK_SERVICE = "trading.risk.v1.RiskService"


class RiskLiveness:
    """Whether risk answered its health check as SERVING within `max_silence_s`."""

    def __init__(
        self, channel: grpc.aio.Channel, *, interval_s: float = 0.5, max_silence_s: float = 2.0
    ) -> None:
        self._channel = channel
        self._interval_s = interval_s
        self._max_silence_s = max_silence_s
        self._serving_at = float("-inf")  # monotonic time of the last SERVING answer
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._serving_at <= self._max_silence_s

    async def probe_once(self) -> None:
        answer = await probe(self._channel, RISK_SERVICE, timeout=self._interval_s)
        if answer.serving:
            self._serving_at = time.monotonic()

    async def start(self) -> None:
        await self.probe_once()  # the first orders need not wait for the loop
        self._task = asyncio.create_task(self._run(), name="risk-liveness")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            with contextlib.suppress(Exception):  # a failed probe is "not seen": it ages out
                await self.probe_once()

    async def stop(self) -> None:
        await stop_task(self._task, name="risk-liveness")
        self._task = None


class EmbeddedPreTradeRisk:
    """Approves in process while risk is up; anything else goes to `authority`
    (risk's CheckOrder). `risk_alive` None: always embedded (tests)."""

    def __init__(
        self, check: PreTradeCheck, authority: PreTradeRisk, *, risk_alive: RiskLiveness | None = None
    ) -> None:
        self._check = check
        self._authority = authority
        self._risk_alive = risk_alive

    async def check(self, order: Order) -> RiskDecision:
        if self._risk_alive is not None and not self._risk_alive.alive:
            return await self._authority.check(order)
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
