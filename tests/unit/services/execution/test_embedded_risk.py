"""Execution's embedded pre-trade check (services.execution.adapters.risk) on
risk's in-memory store: plain approvals are decided in process, everything
risk must see goes to risk's CheckOrder (the authority), and so does any
check the embedded one cannot read state for."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal as D

import grpc
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from trading.risk.v1 import risk_service_pb2 as risk_pb

from services.execution.adapters.risk import EmbeddedPreTradeRisk, RiskLiveness
from services.execution.domain import Order, OrderType, Side, TimeInForce, new_order
from services.execution.ports import RiskDecision, RiskDenial
from services.risk.adapters.memory import MemoryRiskStore
from services.risk.check import PreTradeCheck
from services.risk.ports import CheckRead
from tests.support.quotes import fresh_quote

TENANT = "tenant-a"


class Authority:
    """Risk's CheckOrder, recorded: it denies everything it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def check(self, order: Order) -> RiskDecision:
        self.asked.append(order.client_order_id)
        return RiskDecision(approved=False, check_id="risk-own", denials=(RiskDenial("RISK_TRADING_HALTED"),))


class BrokenState(MemoryRiskStore):
    """Risk's store while Redis cannot be reached."""

    async def read_for_check(self, *args: object, **kwargs: object) -> CheckRead:
        raise RedisConnectionError("connection refused")


def _order(client_order_id: str, quantity: str = "0.01") -> Order:
    return new_order(
        order_id="0190a000-0000-7000-8000-000000000001",
        tenant_id=TENANT,
        client_order_id=client_order_id,
        symbol="BTC-USD",
        side=Side.BUY,
        type=OrderType.MARKET,
        time_in_force=TimeInForce.IOC,
        quantity=D(quantity),
        limit_price=None,
        created_at=datetime.now(UTC),
        strategy_id="",
        venue="paper",
    )


def _store(state: MemoryRiskStore | None = None) -> MemoryRiskStore:
    store = state or MemoryRiskStore()
    quote = fresh_quote("BTC-USD", "64000", "2", "64001", "1", sequence=7)
    store.put_quote("BTC-USD", quote)
    return store


@pytest.mark.asyncio
async def test_a_plain_approval_is_decided_in_process_with_the_quote_it_was_checked_on() -> None:
    authority = Authority()
    embedded = EmbeddedPreTradeRisk(PreTradeCheck(_store()), authority)
    decision = await embedded.check(_order("c-1"))
    assert decision.approved and decision.check_id and authority.asked == []
    assert decision.quote is not None and decision.quote.ask == D("64001") and decision.quote.sequence == 7


@pytest.mark.asyncio
async def test_a_denial_is_risks_own_decision() -> None:
    store = _store()
    await store.set_status(
        TENANT, risk_pb.TradingStatus(state=risk_pb.TRADING_STATE_HALTED), announce=lambda _s: []
    )
    authority = Authority()
    decision = await EmbeddedPreTradeRisk(PreTradeCheck(store), authority).check(_order("c-2"))
    assert authority.asked == ["c-2"]
    assert decision.check_id == "risk-own" and not decision.approved


@pytest.mark.asyncio
async def test_an_order_over_a_limit_goes_to_risk_and_is_not_left_counted() -> None:
    store = _store()
    authority = Authority()
    await EmbeddedPreTradeRisk(PreTradeCheck(store), authority).check(_order("c-3", quantity="1000000"))
    assert authority.asked == ["c-3"]
    # The embedded check took its count back: risk's own check counts it afresh.
    read = await store.read_for_check(TENANT, "BTC-USD", "probe", "c-3", consume=False, now_s=0.0)
    assert read.prior_check_id is None


@pytest.mark.asyncio
async def test_when_risks_state_cannot_be_read_risk_decides() -> None:
    authority = Authority()
    embedded = EmbeddedPreTradeRisk(PreTradeCheck(_store(BrokenState())), authority)
    decision = await embedded.check(_order("c-4"))
    assert authority.asked == ["c-4"] and not decision.approved


@pytest.mark.asyncio
async def test_while_risk_is_not_seen_serving_risk_decides_every_check() -> None:
    # Risk down: its fill consumer is not keeping the positions the check reads.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    async with grpc.aio.insecure_channel(dead) as channel:
        liveness = RiskLiveness(channel, interval_s=0.2)
        await liveness.probe_once()
        assert not liveness.alive
        authority = Authority()
        embedded = EmbeddedPreTradeRisk(PreTradeCheck(_store()), authority, risk_alive=liveness)
        await embedded.check(_order("c-5"))
    assert authority.asked == ["c-5"]
