"""The RiskService servicer on the in-memory adapter: pre-trade checks, limits
and the kill switch, per tenant, with the events they store in the outbox."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as Dec

import grpc
import pytest
from google.protobuf.message import Message
from trading.common.v1 import decimal_pb2, event_pb2, market_pb2, types_pb2
from trading.risk.v1 import events_pb2 as ev
from trading.risk.v1 import risk_service_pb2 as pb

from runtime.contracts import event_registry
from runtime.messaging.envelope import unpack
from runtime.outbox import NATS
from services.risk import domain
from services.risk.adapters.memory import MemoryRiskStore
from services.risk.api import RiskApi
from services.risk.events import RiskEvents
from services.risk.wire import limits_to_proto
from tests.support.servicers import ServicerContext, as_caller, expect_error, servicer_context

D = decimal_pb2.Decimal
BUY, SELL = types_pb2.SIDE_BUY, types_pb2.SIDE_SELL
CHECK = ["risk:check"]
ADMIN = ["risk:read", "risk:write"]


class Desk:
    """The servicer on its in-memory store; no relay (events wait in the outbox)."""

    def __init__(self) -> None:
        self.store = MemoryRiskStore()
        self.events = RiskEvents(self.store, relay=None)
        self.api = RiskApi(self.store, self.events)

    def quote(self, symbol: str, bid: str, ask: str) -> None:
        message = market_pb2.Quote(symbol=symbol, bid_price=D(value=bid), ask_price=D(value=ask))
        message.receive_time.GetCurrentTime()
        self.store.put_quote(symbol, message)

    async def check(self, tenant: str, request: pb.CheckOrderRequest) -> pb.CheckOrderResponse:
        with as_caller(tenant, caller="execution", scopes=CHECK):
            return await self.api.CheckOrder(request, servicer_context())

    async def set_limits(self, tenant: str, limits: domain.Limits, version: int = 0) -> pb.SetLimitsResponse:
        request = pb.SetLimitsRequest(limits=limits_to_proto(limits), expected_version=version)
        with as_caller(tenant, subject="ops-1", scopes=ADMIN):
            return await self.api.SetLimits(request, servicer_context())

    async def get_limits(self, tenant: str) -> pb.GetLimitsResponse:
        with as_caller(tenant, scopes=ADMIN):
            return await self.api.GetLimits(pb.GetLimitsRequest(), servicer_context())

    async def set_state(self, tenant: str, state: int, reason: str) -> pb.SetTradingStateResponse:
        request = pb.SetTradingStateRequest(state=state, reason=reason)  # type: ignore[arg-type]
        with as_caller(tenant, subject="ops-1", scopes=ADMIN):
            return await self.api.SetTradingState(request, servicer_context())

    async def get_state(self, tenant: str) -> pb.TradingStatus:
        with as_caller(tenant, scopes=ADMIN):
            response = await self.api.GetTradingState(pb.GetTradingStateRequest(), servicer_context())
        return response.status

    async def events_of(self, tenant: str) -> list[Message]:
        """The tenant's stored events (the NATS copy of each), once background work is done."""
        await self.events.drain()
        envelopes = [
            event_pb2.EventEnvelope.FromString(r.envelope)
            for r in self.store.outbox(tenant)
            if r.destination == NATS
        ]
        return [unpack(e, event_registry()) for e in envelopes]


@pytest.fixture
def desk() -> Desk:
    desk = Desk()
    desk.quote("BTC-USD", "99", "101")
    return desk


def market(
    client_order_id: str, symbol: str = "BTC-USD", side: int = BUY, qty: str = "1"
) -> pb.CheckOrderRequest:
    return pb.CheckOrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=D(value=qty),
        order_type=market_pb2.ORDER_TYPE_MARKET,
    )


async def test_an_order_within_limits_is_approved_at_the_touch(desk: Desk) -> None:
    response = await desk.check("tenant-a", market("o-1", qty="2"))
    assert response.approved and list(response.denials) == []
    assert (response.reference_price.value, response.notional.value) == ("101", "202")  # a buy takes the ask
    assert response.projected_position.value == "2"
    assert response.trading_state == pb.TRADING_STATE_ACTIVE
    assert response.check_id and response.HasField("checked_at")
    assert await desk.events_of("tenant-a") == []


async def test_every_denial_is_reported_in_order_and_the_rejection_is_stored(desk: Desk) -> None:
    # 1,000 x 101: over the 100,000 notional and the 100-unit position limit.
    response = await desk.check("tenant-a", market("o-1", qty="1000"))
    assert not response.approved
    assert [d.code for d in response.denials] == ["RISK_MAX_NOTIONAL_EXCEEDED", "RISK_MAX_POSITION_EXCEEDED"]
    assert (response.denials[0].limit.value, response.denials[0].actual.value) == ("100000", "101000")
    unquoted = await desk.check("tenant-a", market("o-2", symbol="ETH-USD"))
    assert [d.reason for d in unquoted.denials] == [pb.DENIAL_REASON_NO_QUOTE]
    rejected = await desk.events_of("tenant-a")
    assert all(isinstance(e, ev.OrderRiskRejected) for e in rejected)
    assert [e.client_order_id for e in rejected if isinstance(e, ev.OrderRiskRejected)] == ["o-1", "o-2"]
    assert await desk.events_of("tenant-b") == []


async def test_a_retried_check_keeps_its_id_and_is_counted_once(desk: Desk) -> None:
    await desk.set_limits("tenant-a", replace(domain.DEFAULT_LIMITS, max_orders_per_second=1))
    first = await desk.check("tenant-a", market("o-1"))
    retried = await desk.check("tenant-a", market("o-1"))
    assert first.approved and retried.approved
    assert retried.check_id == first.check_id
    # The window holds one order: a new one is denied, and the throttling alerted once.
    denied = await desk.check("tenant-a", market("o-2"))
    assert [d.code for d in denied.denials] == ["RISK_ORDER_RATE_EXCEEDED"]
    await desk.check("tenant-a", market("o-3"))
    alerts = [e for e in await desk.events_of("tenant-a") if isinstance(e, ev.RiskAlert)]
    assert [a.kind for a in alerts] == [ev.RISK_ALERT_KIND_ORDER_RATE_THROTTLED]
    # Another tenant's window is its own.
    assert (await desk.check("tenant-b", market("o-2"))).approved


async def test_a_denied_or_dry_run_check_leaves_the_rate_window_free(desk: Desk) -> None:
    await desk.set_limits("tenant-a", replace(domain.DEFAULT_LIMITS, max_orders_per_second=1))
    assert not (await desk.check("tenant-a", market("o-1", symbol="ETH-USD"))).approved  # no quote
    dry = market("o-2")
    dry.dry_run = True
    assert (await desk.check("tenant-a", dry)).approved
    assert (await desk.check("tenant-a", market("o-3"))).approved


async def test_limits_are_versioned_per_tenant_and_a_stale_version_is_refused(desk: Desk) -> None:
    default = await desk.get_limits("tenant-a")
    assert default.version == 0 and default.limits == limits_to_proto(domain.DEFAULT_LIMITS)
    tight = replace(domain.DEFAULT_LIMITS, max_order_notional=domain.DEFAULT_LIMITS.max_order_notional / 1000)
    stored = await desk.set_limits("tenant-a", tight)
    assert (stored.version, stored.updated_by) == (1, "ops-1")
    read = await desk.get_limits("tenant-a")
    assert (read.version, read.limits.max_order_notional.value, read.updated_by) == (1, "100", "ops-1")
    # The same limits again: nothing changes (a retry is harmless).
    again = await desk.set_limits("tenant-a", tight, version=1)
    assert (again.version, again.updated_at) == (1, stored.updated_at)
    error = await expect_error(
        desk.set_limits("tenant-a", domain.DEFAULT_LIMITS, version=7), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "stored version is 1" in str(error)
    # The tenant's orders now meet its limits; tenant B's do not.
    assert [d.code for d in (await desk.check("tenant-a", market("o-1"))).denials] == [
        "RISK_MAX_NOTIONAL_EXCEEDED"
    ]
    assert (await desk.check("tenant-b", market("o-1"))).approved
    assert (await desk.get_limits("tenant-b")).version == 0
    changes = [e for e in await desk.events_of("tenant-a") if isinstance(e, ev.LimitsChanged)]
    assert [c.version for c in changes] == [1]


async def test_the_kill_switch_halts_one_tenant_and_a_repeat_changes_nothing(desk: Desk) -> None:
    assert (await desk.get_state("tenant-a")).state == pb.TRADING_STATE_ACTIVE
    halted = await desk.set_state("tenant-a", pb.TRADING_STATE_HALTED, "ops halt")
    assert (halted.status.state, halted.previous_state) == (pb.TRADING_STATE_HALTED, pb.TRADING_STATE_ACTIVE)
    again = await desk.set_state("tenant-a", pb.TRADING_STATE_HALTED, "second reason")
    assert (again.status.reason, again.previous_state) == ("ops halt", pb.TRADING_STATE_HALTED)
    assert (await desk.get_state("tenant-a")).reason == "ops halt"
    denied = await desk.check("tenant-a", market("o-1"))
    assert [d.code for d in denied.denials] == ["RISK_TRADING_HALTED"]
    assert denied.trading_state == pb.TRADING_STATE_HALTED
    assert (await desk.check("tenant-b", market("o-1"))).approved
    switches = [e for e in await desk.events_of("tenant-a") if isinstance(e, ev.TradingStateChanged)]
    assert [(s.previous_state, s.state, s.actor_id) for s in switches] == [
        (pb.TRADING_STATE_ACTIVE, pb.TRADING_STATE_HALTED, "ops-1")
    ]


async def test_reducing_only_lets_a_position_shrink(desk: Desk) -> None:
    day = datetime.now(UTC).date()
    await desk.store.apply_fill(
        "tenant-a",
        domain.Fill(
            "x-1",
            symbol="BTC-USD",
            side=domain.Side.BUY,
            quantity=Dec(3),
            price=Dec(100),
            fee=Dec(0),
            day=day,
        ),
    )
    await desk.set_state("tenant-a", pb.TRADING_STATE_REDUCING, "reduce only")
    assert [d.code for d in (await desk.check("tenant-a", market("o-1"))).denials] == ["RISK_REDUCING_ONLY"]
    sell = await desk.check("tenant-a", market("o-2", side=SELL, qty="2"))
    assert sell.approved and sell.projected_position.value == "1"


async def test_a_call_without_a_tenant_is_unauthenticated(desk: Desk) -> None:
    with as_caller("", scopes=ADMIN):
        await expect_error(
            desk.api.GetLimits(pb.GetLimitsRequest(), ServicerContext()),  # type: ignore[arg-type]
            grpc.StatusCode.UNAUTHENTICATED,
        )
