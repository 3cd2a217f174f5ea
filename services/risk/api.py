"""gRPC API of the risk service (trading.risk.v1.RiskService).

CheckOrder runs the pre-trade check (services.risk.check: one read of the
store, one Redis round trip in production, then the pure checks) and
publishes what it causes in the background. Execution runs the same check in
its own process for approvals and calls CheckOrder for every check that needs
risk itself (denials, alerts, the daily loss level).
The tenant comes only from the call's metadata (require_tenant()).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import grpc
from prometheus_client import Counter
from trading.risk.v1 import events_pb2 as ev
from trading.risk.v1 import risk_service_pb2 as pb

from runtime import decimals
from runtime.context import current_context, require_tenant
from runtime.errors import ServiceError, domain_error
from services.risk import domain
from services.risk.check import PreTradeCheck
from services.risk.events import RiskEvents
from services.risk.ports import CheckRead, LimitsConflictError, RiskStore
from services.risk.wire import canonical_limits, limits_to_proto

DOMAIN = "trading.risk"
Context = grpc.aio.ServicerContext[Any, Any]

CHECKS = Counter("trading_risk_checks", "Pre-trade checks (dry runs excluded), by result.", ("result",))
DENIALS = Counter(
    "trading_risk_denials", "Reasons of denied pre-trade checks (one check may have several).", ("reason",)
)
_APPROVED, _DENIED = CHECKS.labels("approved"), CHECKS.labels("denied")
_DENIAL_REASONS = {reason: DENIALS.labels(reason.code) for reason in domain.DenialReason}


def _denial(denial: domain.Denial) -> pb.Denial:
    message = pb.Denial(
        reason=pb.DenialReason.ValueType(denial.reason), code=denial.code, message=denial.message
    )
    if denial.limit is not None:
        message.limit.CopyFrom(decimals.to_proto(denial.limit))
    if denial.actual is not None:
        message.actual.CopyFrom(decimals.to_proto(denial.actual))
    return message


def _default_status() -> pb.TradingStatus:
    """A tenant that never used the kill switch is ACTIVE."""
    return pb.TradingStatus(state=pb.TRADING_STATE_ACTIVE, reason="default")


class RiskApi:
    """The RiskService servicer."""

    def __init__(self, store: RiskStore, events: RiskEvents) -> None:
        self._store = store
        self._events = events
        self._check = PreTradeCheck(store)

    # ---------------------------------------------------------------- CheckOrder

    async def CheckOrder(self, request: pb.CheckOrderRequest, context: Context) -> pb.CheckOrderResponse:
        tenant = require_tenant()
        order = domain.OrderIntent(
            symbol=request.symbol,
            side=domain.Side(request.side),
            quantity=decimals.from_proto(request.quantity),
            order_type=domain.OrderType(request.order_type),
            limit_price=decimals.from_proto(request.limit_price) if request.HasField("limit_price") else None,
        )
        outcome = await self._check.run(
            tenant,
            order,
            request.client_order_id,
            submitted_us=request.submitted_at.ToMicroseconds() if request.HasField("submitted_at") else None,
            consume=not request.dry_run,
        )
        result = outcome.result
        response = pb.CheckOrderResponse(
            check_id=outcome.check_id,
            approved=result.approved,
            denials=[_denial(d) for d in result.denials],
            trading_state=pb.TradingState.ValueType(outcome.state),
            projected_position=decimals.to_proto(result.projected_position),
        )
        if result.reference_price is not None:
            response.reference_price.CopyFrom(decimals.to_proto(result.reference_price))
        if result.notional is not None:
            response.notional.CopyFrom(decimals.to_proto(result.notional))
        response.checked_at.FromNanoseconds(outcome.checked_at_ns)
        if not request.dry_run:
            if result.approved:
                _APPROVED.inc()
            else:
                _DENIED.inc()
                for reason in result.reasons:
                    _DENIAL_REASONS[reason].inc()
            self._after_check(
                tenant, request, response, result, outcome.read, outcome.limits, outcome.daily_pnl
            )
        return response

    def _after_check(
        self,
        tenant: str,
        request: pb.CheckOrderRequest,
        response: pb.CheckOrderResponse,
        result: domain.CheckResult,
        read: CheckRead,
        limits: domain.Limits,
        pnl: Decimal,
    ) -> None:
        """Events a real (not dry-run) check causes, published in the background."""
        reasons = set(result.reasons)
        if reasons:
            rejected = ev.OrderRiskRejected(
                check_id=response.check_id,
                client_order_id=request.client_order_id,
                strategy_id=request.strategy_id,
                symbol=request.symbol,
                side=request.side,
                quantity=request.quantity,
                order_type=request.order_type,
                denials=response.denials,
                trading_state=response.trading_state,
            )
            if request.HasField("limit_price"):
                rejected.limit_price.CopyFrom(request.limit_price)
            rejected.rejected_at.CopyFrom(response.checked_at)
            self._events.spawn(self._events.record(tenant, rejected))
        if domain.loss_level(pnl, limits.daily_loss_limit) is not domain.LossLevel.OK:
            self._events.spawn(self._events.on_daily_pnl(tenant, pnl, limits))
        if domain.DenialReason.ORDER_RATE in reasons:
            self._events.spawn(
                self._alert(
                    tenant,
                    ev.RISK_ALERT_KIND_ORDER_RATE_THROTTLED,
                    ev.RISK_ALERT_SEVERITY_WARNING,
                    f"orders are being denied: more than {limits.max_orders_per_second} per second",
                    "",
                    Decimal(read.orders_in_window),
                    Decimal(limits.max_orders_per_second),
                )
            )
        if result.stale_quote:
            self._events.spawn(
                self._alert(
                    tenant,
                    ev.RISK_ALERT_KIND_STALE_QUOTE,
                    ev.RISK_ALERT_SEVERITY_WARNING,
                    f"the quote of {request.symbol} is older than {limits.max_quote_age_s:g}s; "
                    "its orders are denied",
                    request.symbol,
                    None,
                    None,
                )
            )

    async def _alert(
        self,
        tenant: str,
        kind: ev.RiskAlertKind.ValueType,
        severity: ev.RiskAlertSeverity.ValueType,
        message: str,
        symbol: str,
        observed: Decimal | None,
        threshold: Decimal | None,
    ) -> None:
        await self._events.alert(
            tenant, kind, severity, message, symbol=symbol, observed=observed, threshold=threshold
        )

    # ---------------------------------------------------------------- limits

    async def GetLimits(self, request: pb.GetLimitsRequest, context: Context) -> pb.GetLimitsResponse:
        stored = await self._store.get_limits(require_tenant())
        if stored is None:
            return pb.GetLimitsResponse(limits=limits_to_proto(domain.DEFAULT_LIMITS), version=0)
        response = pb.GetLimitsResponse(
            limits=stored.limits, version=stored.version, updated_by=stored.updated_by
        )
        response.updated_at.FromNanoseconds(stored.updated_at_ns)
        return response

    async def SetLimits(self, request: pb.SetLimitsRequest, context: Context) -> pb.SetLimitsResponse:
        tenant = require_tenant()
        actor = current_context().subject
        limits = canonical_limits(request.limits)
        try:
            stored = await self._events.set_limits(
                tenant, limits, expected_version=request.expected_version, actor=actor
            )
        except LimitsConflictError as exc:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "RISK_LIMITS_VERSION_MISMATCH",
                    DOMAIN,
                    f"limits changed: stored version is {exc.stored_version}, "
                    f"expected {request.expected_version}",
                    {"stored_version": str(exc.stored_version)},
                )
            ) from None
        response = pb.SetLimitsResponse(
            limits=stored.limits if stored.changed else (stored.previous or limits),
            version=stored.version,
            updated_by=stored.updated_by,
        )
        response.updated_at.FromNanoseconds(stored.updated_at_ns)
        return response

    # ---------------------------------------------------------------- trading state

    async def GetTradingState(
        self, request: pb.GetTradingStateRequest, context: Context
    ) -> pb.GetTradingStateResponse:
        status = await self._store.get_status(require_tenant())
        return pb.GetTradingStateResponse(status=status or _default_status())

    async def SetTradingState(
        self, request: pb.SetTradingStateRequest, context: Context
    ) -> pb.SetTradingStateResponse:
        """The kill switch. Setting the state the tenant is already in changes
        nothing (the first reason stays), so retries are harmless."""
        tenant = require_tenant()
        status = pb.TradingStatus(
            state=request.state, reason=request.reason, automatic=False, changed_by=current_context().subject
        )
        status.changed_at.FromNanoseconds(time.time_ns())
        outcome, before = await self._events.set_state(tenant, status)
        previous = before or _default_status()
        if outcome != "changed":
            return pb.SetTradingStateResponse(status=previous, previous_state=previous.state)
        return pb.SetTradingStateResponse(status=status, previous_state=previous.state)
