"""Risk's CheckOrder over gRPC: the :class:`services.execution.ports.PreTradeRisk`
of production.

Risk unavailable (down, too slow, overloaded, or a failure of the call
itself) is :class:`RiskUnavailable`; any other error status is risk refusing
the request, passed on as :class:`RiskRequestRefused` with risk's rich status.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import grpc
from trading.risk.v1 import risk_service_pb2 as risk_pb

from runtime import decimals
from runtime.errors import rich_status, status
from services.execution.domain import Order
from services.execution.ports import RiskDecision, RiskDenial, RiskRequestRefused, RiskUnavailable

if TYPE_CHECKING:
    from trading.risk.v1.risk_service_pb2_grpc import RiskServiceAsyncStub

# Risk's contract is stricter about strategy ids than execution's; a strategy
# id risk would refuse is left out of the check (it is attribution only).
_RISK_STRATEGY_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Codes of a risk call that say "risk could not answer" (not "risk said no").
_RISK_DOWN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)


class GrpcPreTradeRisk:
    """Calls risk's CheckOrder with a deadline of `timeout_s`."""

    def __init__(self, stub: RiskServiceAsyncStub, *, timeout_s: float = 1.0) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def check(self, order: Order) -> RiskDecision:
        try:
            check = await self._stub.CheckOrder(check_request(order), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() in _RISK_DOWN:
                raise RiskUnavailable(err.code().name) from None
            st = rich_status(err) or status(err.code(), err.details() or "risk check failed")
            raise RiskRequestRefused(st) from None
        return RiskDecision(
            approved=check.approved,
            check_id=check.check_id,
            denials=tuple(
                RiskDenial(
                    d.code or risk_pb.DenialReason.Name(d.reason).replace("DENIAL_REASON_", "RISK_"),
                    d.message,
                )
                for d in check.denials
            ),
        )


def check_request(order: Order) -> risk_pb.CheckOrderRequest:
    """The CheckOrder request of an order."""
    req = risk_pb.CheckOrderRequest(
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=int(order.side),  # type: ignore[arg-type]
        quantity=decimals.to_proto(order.quantity),
        order_type=int(order.type),  # type: ignore[arg-type]
    )
    # The time execution accepted the order: risk limits the order rate
    # by it, so checks delayed by a stall do not count as a burst.
    req.submitted_at.FromDatetime(order.created_at)
    if order.limit_price is not None:
        req.limit_price.CopyFrom(decimals.to_proto(order.limit_price))
    if _RISK_STRATEGY_ID.fullmatch(order.strategy_id):
        req.strategy_id = order.strategy_id
    return req
