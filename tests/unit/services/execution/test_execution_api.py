"""The ExecutionService servicer on the in-memory adapters: placement (paper
fills at the touch, risk's limits, idempotency by client order id), cancels,
reads and listing, per tenant. No server: the venue is the real paper venue
on an in-memory quote cache, and risk is :class:`LimitsRisk`, risk's own
pre-trade checks (services/risk/domain) over the fills this store holds."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from nats.aio.client import Client as NatsClient
from prometheus_client import REGISTRY
from trading.common.v1 import market_pb2
from trading.common.v1 import types_pb2 as common_types
from trading.execution.v1 import execution_service_pb2 as pb
from trading.execution.v1 import types_pb2 as types

from runtime import decimals
from runtime.errors import ServiceError
from services.execution.adapters.memory import MemoryMarketQuotes, MemoryOrderStore
from services.execution.api import ExecutionApi
from services.execution.domain import Order, OrderEvent, OrderStatus, Quote, Side
from services.execution.ports import RiskDecision, RiskDenial, RiskUnavailable
from services.execution.venue import PaperVenue
from services.risk import domain as risk
from tests.support.servicers import as_caller, expect_error, servicer_context

T0 = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
WRITE, READ = ["orders:write"], ["orders:read"]
BTC = Quote("BTC-USD", bid=D("64000"), bid_size=D("2"), ask=D("64001"), ask_size=D("1.5"), sequence=11)
LISTED = ("BTC-USD", "ETH-USD")  # ETH-USD is listed but never quoted


class LimitsRisk:
    """A PreTradeRisk in process: risk's own checks (services.risk.domain.check_order)
    with a tenant's limits and trading state, its position from the fills the
    store committed, the quote the venue sees, and the order rate counted once
    per client order id. ``available = False`` is risk being down."""

    def __init__(self, store: MemoryOrderStore, quotes: MemoryMarketQuotes) -> None:
        self._store = store
        self._quotes = quotes
        self.limits: dict[str, risk.Limits] = {}
        self.state: dict[str, risk.TradingState] = {}
        self.available = True
        self._counted: dict[tuple[str, str], datetime] = {}

    async def check(self, order: Order) -> RiskDecision:
        if not self.available:
            raise RiskUnavailable("UNAVAILABLE")
        tenant = order.tenant_id
        key = (tenant, order.client_order_id)
        # The tenant's other orders counted in the second before this one.
        in_window = sum(
            1
            for k, at in self._counted.items()
            if k[0] == tenant and k != key and timedelta(0) <= order.created_at - at < timedelta(seconds=1)
        )
        quote = await self._quotes.last_quote(order.symbol)
        snapshot = risk.RiskSnapshot(
            limits=self.limits.get(tenant, risk.DEFAULT_LIMITS),
            state=self.state.get(tenant, risk.TradingState.ACTIVE),
            position=self._position(tenant, order.symbol),
            orders_in_window=in_window,
            daily_pnl=D(0),
            quote=risk.QuoteView(bid=quote.bid, ask=quote.ask, age_s=0.0) if quote is not None else None,
            already_counted=key in self._counted,
        )
        intent = risk.OrderIntent(
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            order_type=risk.OrderType(int(order.type)),
            limit_price=order.limit_price,
        )
        result = risk.check_order(intent, snapshot)
        self._counted.setdefault(key, order.created_at)
        return RiskDecision(
            approved=result.approved,
            check_id=str(uuid.uuid4()),
            denials=tuple(RiskDenial(d.code, d.message) for d in result.denials),
        )

    def _position(self, tenant: str, symbol: str) -> D:
        signed = (
            f.quantity if f.side is Side.BUY else -f.quantity
            for t, f in self._store.executions
            if t == tenant and f.symbol == symbol
        )
        return sum(signed, D(0))


def context() -> grpc.aio.ServicerContext[Any, Any]:
    """A fresh call context (the parts of grpc's that servicers use, recorded)."""
    return servicer_context()


class Clock:
    """Each reading a millisecond after the previous one (orders get distinct times)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


class Desk:
    """The servicer on its in-memory order store, quote cache and risk."""

    def __init__(self) -> None:
        self.store = MemoryOrderStore()
        self.quotes = MemoryMarketQuotes()
        self.quotes.list_instruments(LISTED)
        self.quotes.put(BTC)
        self.risk = LimitsRisk(self.store, self.quotes)
        self.changes: list[OrderEvent] = []
        # StreamOrderUpdates reads JetStream and is not exercised here: an unconnected client.
        self.api = ExecutionApi(
            self.store, PaperVenue(self.quotes), self.risk, NatsClient(), self.changes.extend, clock=Clock()
        )

    async def place(self, tenant: str = "tenant-a", /, **fields: Any) -> pb.PlaceOrderResponse:
        with as_caller(tenant, scopes=WRITE):
            return await self.api.PlaceOrder(place_request(**fields), context())

    async def get(self, tenant: str, **ref: str) -> pb.GetOrderResponse:
        with as_caller(tenant, scopes=READ):
            return await self.api.GetOrder(pb.GetOrderRequest(**ref), context())

    async def cancel(self, tenant: str, **ref: str) -> pb.CancelOrderResponse:
        with as_caller(tenant, scopes=WRITE):
            return await self.api.CancelOrder(pb.CancelOrderRequest(**ref), context())

    async def list(self, tenant: str, /, **fields: Any) -> pb.ListOrdersResponse:
        with as_caller(tenant, scopes=READ):
            return await self.api.ListOrders(pb.ListOrdersRequest(**fields), context())


def place_request(
    *,
    client_order_id: str = "c-1",
    symbol: str = "BTC-USD",
    side: int = common_types.SIDE_BUY,
    type: int = market_pb2.ORDER_TYPE_MARKET,
    tif: int = types.TIME_IN_FORCE_IOC,
    quantity: str = "0.5",
    limit_price: str | None = None,
    strategy_id: str = "",
) -> pb.PlaceOrderRequest:
    request = pb.PlaceOrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        type=type,  # type: ignore[arg-type]
        time_in_force=tif,  # type: ignore[arg-type]
        quantity=decimals.to_proto(D(quantity)),
        strategy_id=strategy_id,
    )
    if limit_price is not None:
        request.limit_price.CopyFrom(decimals.to_proto(D(limit_price)))
    return request


def num(value: object) -> D:
    return decimals.from_proto(value)  # type: ignore[arg-type]


def resting_buy(client_order_id: str = "rest-1", limit: str = "63990") -> dict[str, Any]:
    """A GTC buy below the ask: accepted, it rests."""
    return {
        "client_order_id": client_order_id,
        "type": market_pb2.ORDER_TYPE_LIMIT,
        "tif": types.TIME_IN_FORCE_GTC,
        "limit_price": limit,
    }


@pytest.fixture
def desk() -> Desk:
    return Desk()


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def reason(error: object) -> str:
    """The ErrorInfo reason of a refused call."""
    assert isinstance(error, ServiceError)
    for detail in error.status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError(f"no ErrorInfo in {error.status}")


# ---------------------------------------------------------------------------- PlaceOrder


async def test_a_market_ioc_order_fills_at_the_ask_and_is_stored_with_its_events(desk: Desk) -> None:
    answer = await desk.place(quantity="0.5")
    order = answer.order
    assert not answer.replayed
    assert order.status == types.ORDER_STATUS_FILLED
    assert (num(order.filled_quantity), num(order.average_fill_price)) == (D("0.5"), D("64001"))
    assert (order.venue, order.version) == ("paper", 3)  # NEW -> ACCEPTED -> FILLED
    stored = await desk.store.get("tenant-a", order_id=order.order_id)
    assert stored is not None and stored.order.status is OrderStatus.FILLED
    assert [e.kind.value for e in desk.changes] == ["OrderAccepted", "OrderFillReported"]
    # Each event once for Kafka and once for NATS, written with the order.
    assert [r.destination for r in desk.store.outbox] == ["kafka", "nats", "kafka", "nats"]
    assert [f.quantity for _, f in desk.store.executions] == [D("0.5")]


async def test_an_ioc_order_larger_than_the_touch_fills_what_is_shown_and_cancels_the_rest(
    desk: Desk,
) -> None:
    order = (await desk.place(quantity="1.55")).order  # 1.5 shown at the ask
    assert order.status == types.ORDER_STATUS_CANCELED
    assert order.cancel_reason == types.CANCEL_REASON_UNFILLED_REMAINDER
    assert num(order.filled_quantity) == D("1.5")


async def test_a_gtc_limit_below_the_ask_rests_accepted(desk: Desk) -> None:
    order = (await desk.place(**resting_buy())).order
    assert order.status == types.ORDER_STATUS_ACCEPTED
    assert num(order.remaining_quantity) == D("0.5")
    assert await desk.store.working_symbols() == ["BTC-USD"]


async def test_a_retry_with_the_same_client_order_id_answers_the_first_result(desk: Desk) -> None:
    first = (await desk.place(client_order_id="same", quantity="0.5")).order
    mismatches = _counter("execution_idempotency_mismatch_total")
    again = await desk.place(client_order_id="same", quantity="0.5")
    assert again.replayed and again.order == first
    # A different body is answered with the first result too, and counted.
    different = await desk.place(client_order_id="same", quantity="1", side=common_types.SIDE_SELL)
    assert different.replayed and different.order == first
    assert _counter("execution_idempotency_mismatch_total") == mismatches + 1
    listed = await desk.list("tenant-a")
    assert [o.order_id for o in listed.orders] == [first.order_id]
    assert len(desk.store.executions) == 1


async def test_tenants_place_the_same_client_order_id_independently_and_never_see_each_other(
    desk: Desk,
) -> None:
    a = (await desk.place("tenant-a", client_order_id="c-1")).order
    b = await desk.place("tenant-b", client_order_id="c-1")
    assert not b.replayed and b.order.order_id != a.order_id
    await expect_error(desk.get("tenant-b", order_id=a.order_id), grpc.StatusCode.NOT_FOUND)
    assert (await desk.get("tenant-b", client_order_id="c-1")).order.order_id == b.order.order_id
    await expect_error(desk.cancel("tenant-b", order_id=a.order_id), grpc.StatusCode.NOT_FOUND)
    assert [o.order_id for o in (await desk.list("tenant-b")).orders] == [b.order.order_id]
    assert [o.order_id for o in (await desk.list("tenant-a")).orders] == [a.order_id]


async def test_a_risk_denial_is_failed_precondition_and_stored_rejected(desk: Desk) -> None:
    # 2 BTC at the 64001 ask is 128002 of notional; the default limit is 100000.
    error = await expect_error(
        desk.place(client_order_id="big", quantity="2", tif=types.TIME_IN_FORCE_GTC),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(error) == "RISK_MAX_NOTIONAL_EXCEEDED"
    stored = await desk.store.get("tenant-a", client_order_id="big")
    assert stored is not None
    assert (stored.order.status, stored.order.reject_reason) == (
        OrderStatus.REJECTED,
        "RISK_MAX_NOTIONAL_EXCEEDED",
    )
    assert [e.kind.value for e in desk.changes] == ["OrderRejected"]
    # The retry is refused the same way, and places nothing.
    await expect_error(desk.place(client_order_id="big", quantity="2"), grpc.StatusCode.FAILED_PRECONDITION)
    assert len((await desk.list("tenant-a")).orders) == 1


async def test_risk_limits_follow_the_tenants_own_fills_and_state(desk: Desk) -> None:
    desk.risk.limits["tenant-a"] = replace(risk.DEFAULT_LIMITS, default_max_position=D("1"))
    await desk.place(client_order_id="f-1", quantity="0.75")  # filled: position 0.75
    await expect_error(desk.place(client_order_id="f-2", quantity="0.5"), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await desk.place("tenant-b", client_order_id="f-2", quantity="0.5")).order.status == (
        types.ORDER_STATUS_FILLED
    )
    desk.risk.state["tenant-b"] = risk.TradingState.HALTED
    error = await expect_error(
        desk.place("tenant-b", client_order_id="f-3"), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert reason(error) == "RISK_TRADING_HALTED"


async def test_risk_unavailable_places_nothing_but_a_retry_of_a_placed_order_is_answered(desk: Desk) -> None:
    placed = (await desk.place(client_order_id="before")).order
    desk.risk.available = False
    await expect_error(desk.place(client_order_id="during"), grpc.StatusCode.UNAVAILABLE)
    assert await desk.store.get("tenant-a", client_order_id="during") is None
    retry = await desk.place(client_order_id="before")
    assert retry.replayed and retry.order == placed


async def test_an_unknown_instrument_is_not_found_and_nothing_is_stored(desk: Desk) -> None:
    await expect_error(desk.place(symbol="DOGE-USD"), grpc.StatusCode.NOT_FOUND)
    assert await desk.store.get("tenant-a", client_order_id="c-1") is None
    assert desk.changes == []


async def test_an_order_of_a_listed_symbol_without_a_quote_is_refused_by_risk(desk: Desk) -> None:
    error = await expect_error(desk.place(symbol="ETH-USD"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(error) == "RISK_NO_QUOTE"


@pytest.mark.parametrize(
    "fields",
    [
        {"quantity": "0"},
        {"quantity": "-1"},
        {"type": market_pb2.ORDER_TYPE_LIMIT, "tif": types.TIME_IN_FORCE_GTC},  # no limit price
        {"type": market_pb2.ORDER_TYPE_LIMIT, "tif": types.TIME_IN_FORCE_GTC, "limit_price": "0"},
        {"limit_price": "64000"},  # a market order with a limit price
        {"side": 7},
    ],
    ids=[
        "zero-quantity",
        "negative-quantity",
        "limit-without-price",
        "zero-price",
        "market-with-price",
        "side",
    ],
)
async def test_bad_orders_are_invalid_argument_and_store_nothing(
    desk: Desk, fields: dict[str, object]
) -> None:
    await expect_error(desk.place(**fields), grpc.StatusCode.INVALID_ARGUMENT)
    assert await desk.store.get("tenant-a", client_order_id="c-1") is None


async def test_a_tenant_id_that_is_no_subject_token_is_invalid_argument(desk: Desk) -> None:
    await expect_error(desk.place("tenant.a"), grpc.StatusCode.INVALID_ARGUMENT)


# ---------------------------------------------------------------------------- CancelOrder


async def test_cancel_a_resting_order_by_either_id_and_again(desk: Desk) -> None:
    resting = (await desk.place(**resting_buy("rest-1"))).order
    canceled = (await desk.cancel("tenant-a", order_id=resting.order_id)).order
    assert canceled.status == types.ORDER_STATUS_CANCELED
    assert canceled.cancel_reason == types.CANCEL_REASON_CLIENT_REQUEST
    assert canceled.version == resting.version + 2  # PENDING_CANCEL, then CANCELED
    events = len(desk.changes)
    again = (await desk.cancel("tenant-a", client_order_id="rest-1")).order
    assert again == canceled and len(desk.changes) == events  # idempotent: nothing new
    other = (await desk.place(**resting_buy("rest-2"))).order
    assert (
        await desk.cancel("tenant-a", client_order_id="rest-2")
    ).order.status == types.ORDER_STATUS_CANCELED
    assert (await desk.get("tenant-a", order_id=other.order_id)).order.status == types.ORDER_STATUS_CANCELED


async def test_a_filled_order_is_not_cancelable_and_an_unknown_one_not_found(desk: Desk) -> None:
    filled = (await desk.place(client_order_id="done")).order
    error = await expect_error(
        desk.cancel("tenant-a", order_id=filled.order_id), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert reason(error) == "EXECUTION_ORDER_NOT_CANCELABLE"
    await expect_error(desk.cancel("tenant-a", order_id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND)
    await expect_error(desk.cancel("tenant-a", client_order_id="never"), grpc.StatusCode.NOT_FOUND)


# ---------------------------------------------------------------------------- GetOrder, ListOrders


async def test_get_order_by_either_id(desk: Desk) -> None:
    placed = (await desk.place(**resting_buy("r-1"))).order
    assert (await desk.get("tenant-a", order_id=placed.order_id)).order == placed
    assert (await desk.get("tenant-a", client_order_id="r-1")).order == placed
    await expect_error(desk.get("tenant-a", client_order_id="r-2"), grpc.StatusCode.NOT_FOUND)


async def test_list_orders_pages_newest_first_with_filters(desk: Desk) -> None:
    ids = [(await desk.place(**resting_buy(f"r-{i}"))).order.order_id for i in range(5)]
    filled = (await desk.place(client_order_id="m-1")).order.order_id
    seen: list[str] = []
    token = ""
    while True:
        page = await desk.list("tenant-a", page_size=2, page_token=token)
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == [filled, *reversed(ids)]
    only_filled = await desk.list("tenant-a", statuses=[types.ORDER_STATUS_FILLED])
    assert [o.order_id for o in only_filled.orders] == [filled]
    first = await desk.list("tenant-a", page_size=2)
    # A token is accepted only with the filters it was issued for.
    await expect_error(
        desk.list("tenant-a", page_size=2, page_token=first.next_page_token, symbol="ETH-USD"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_error(desk.list("tenant-a", page_token="garbage"), grpc.StatusCode.INVALID_ARGUMENT)


async def test_list_orders_by_creation_time(desk: Desk) -> None:
    early = (await desk.place(**resting_buy("r-1"))).order
    late = (await desk.place(**resting_buy("r-2"))).order
    request = pb.ListOrdersRequest()
    request.created.start.CopyFrom(late.created_at)
    assert [o.order_id for o in (await desk.list("tenant-a", created=request.created)).orders] == [
        late.order_id
    ]
    request.created.ClearField("start")
    request.created.end.CopyFrom(late.created_at)
    assert [o.order_id for o in (await desk.list("tenant-a", created=request.created)).orders] == [
        early.order_id
    ]
