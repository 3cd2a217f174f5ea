"""The public gRPC edge on the running platform, with the plain generated stubs
(what any gRPC client in any language sees): TLS only, the REST routes' RPCs
and no others, the same credentials, idempotency, errors and streaming."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from trading.common.v1 import market_pb2, types_pb2
from trading.execution.v1 import execution_service_pb2 as ex
from trading.execution.v1 import execution_service_pb2_grpc as ex_grpc
from trading.execution.v1 import types_pb2 as ex_types
from trading.identity.v1 import identity_service_pb2 as idn
from trading.identity.v1 import identity_service_pb2_grpc as idn_grpc
from trading.marketdata.v1 import marketdata_service_pb2 as md
from trading.marketdata.v1 import marketdata_service_pb2_grpc as md_grpc

from gateway.edge import REPLAYED_METADATA, edge_ca_file, edge_target
from runtime import decimals
from tests.contract.conftest import RunningPlatform, create_tenant

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def edge(platform: RunningPlatform) -> AsyncIterator[grpc.aio.Channel]:
    credentials = grpc.ssl_channel_credentials(edge_ca_file(platform.settings).read_bytes())
    async with grpc.aio.secure_channel(edge_target(platform.settings), credentials) as channel:
        yield channel


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def trader(platform: RunningPlatform) -> tuple[str, str, str]:
    """A trader of a tenant of its own: the demo tenant's limits and trading
    state are whatever earlier contract tests left (the every-RPC walk sets them)."""
    tenant = await create_tenant(platform, "edge")
    return tenant.slug, tenant.email, tenant.password


async def _login(
    channel: grpc.aio.Channel, slug: str, email: str, password: str
) -> tuple[tuple[str, str], ...]:
    reply = await idn_grpc.IdentityServiceStub(channel).Login(
        idn.LoginRequest(tenant_slug=slug, email=email, password=password), timeout=10
    )
    return (("authorization", f"Bearer {reply.tokens.access_token}"),)


def _order(client_order_id: str, quantity: str = "0.01") -> ex.PlaceOrderRequest:
    return ex.PlaceOrderRequest(
        client_order_id=client_order_id,
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        type=market_pb2.ORDER_TYPE_MARKET,
        time_in_force=ex_types.TIME_IN_FORCE_IOC,
        quantity=decimals.to_proto(quantity),
    )


def _details(err: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo | None, list[str]]:
    st = rpc_status.from_call(err)
    info = None
    fields: list[str] = []
    for any_ in st.details if st is not None else ():
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
        elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return info, fields


async def test_a_trader_quotes_orders_once_and_streams_to_filled(
    edge: grpc.aio.Channel, trader: tuple[str, str, str]
) -> None:
    auth = await _login(edge, *trader)
    quote = await md_grpc.MarketDataServiceStub(edge).GetQuote(
        md.GetQuoteRequest(symbol="BTC-USD"), metadata=auth, timeout=10
    )
    assert quote.quote.symbol == "BTC-USD"

    orders = ex_grpc.ExecutionServiceStub(edge)
    updates = orders.StreamOrderUpdates(ex.StreamOrderUpdatesRequest(symbol="BTC-USD"), metadata=auth)
    order_id = ""

    async def until_filled() -> list[int]:
        seen: list[int] = []
        async for update in updates:
            if order_id and update.order.order_id == order_id:
                seen.append(update.order.status)
                if update.order.status == ex_types.ORDER_STATUS_FILLED:
                    return seen
        return seen

    watcher = asyncio.create_task(until_filled())
    await asyncio.sleep(1.0)  # the stream's consumer is made when the call arrives
    key = f"edge-{uuid.uuid4()}"
    request = _order(f"edge-{uuid.uuid4().hex[:12]}")
    first = orders.PlaceOrder(request, metadata=(*auth, ("idempotency-key", key)), timeout=10)
    placed = await first
    order_id = placed.order.order_id
    assert (REPLAYED_METADATA, "true") not in tuple(await first.initial_metadata())
    again = orders.PlaceOrder(request, metadata=(*auth, ("idempotency-key", key)), timeout=10)
    assert (await again).order.order_id == placed.order.order_id
    assert (REPLAYED_METADATA, "true") in tuple(await again.initial_metadata())

    statuses = await asyncio.wait_for(watcher, 20)
    updates.cancel()
    assert statuses[-1] == ex_types.ORDER_STATUS_FILLED, statuses


async def test_a_key_reused_with_another_request_is_refused(
    edge: grpc.aio.Channel, trader: tuple[str, str, str]
) -> None:
    auth = await _login(edge, *trader)
    orders = ex_grpc.ExecutionServiceStub(edge)
    key = f"edge-{uuid.uuid4()}"
    await orders.PlaceOrder(
        _order(f"edge-{uuid.uuid4().hex[:12]}"), metadata=(*auth, ("idempotency-key", key))
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await orders.PlaceOrder(
            _order(f"edge-{uuid.uuid4().hex[:12]}"), metadata=(*auth, ("idempotency-key", key))
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, _ = _details(refused.value)
    assert info is not None and info.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_calls_without_a_credential_or_with_a_bad_one_are_unauthenticated(
    edge: grpc.aio.Channel,
) -> None:
    stub = md_grpc.MarketDataServiceStub(edge)
    for metadata in ((), (("authorization", "Bearer not-a-token"),), (("x-api-key", "tk_live_nope"),)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"), metadata=metadata, timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED, metadata
        info, _ = _details(refused.value)
        assert info is not None and info.domain == "trading.gateway", metadata


async def test_another_tenants_order_is_not_found(
    platform: RunningPlatform, edge: grpc.aio.Channel, trader: tuple[str, str, str]
) -> None:
    auth = await _login(edge, *trader)
    orders = ex_grpc.ExecutionServiceStub(edge)
    placed = await orders.PlaceOrder(_order(f"edge-{uuid.uuid4().hex[:12]}"), metadata=auth, timeout=10)
    other = await create_tenant(platform, "edge-other")
    other_auth = await _login(edge, other.slug, other.email, other.password)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await orders.GetOrder(
            ex.GetOrderRequest(order_id=placed.order.order_id), metadata=other_auth, timeout=10
        )
    assert refused.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


async def test_bad_input_gets_field_violations_and_places_nothing(
    edge: grpc.aio.Channel, trader: tuple[str, str, str]
) -> None:
    auth = await _login(edge, *trader)
    orders = ex_grpc.ExecutionServiceStub(edge)
    bad = _order(f"edge-{uuid.uuid4().hex[:12]}", quantity="-1")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await orders.PlaceOrder(bad, metadata=auth, timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    _, fields = _details(refused.value)
    assert any(f.startswith("quantity") for f in fields), fields
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await orders.GetOrder(
            ex.GetOrderRequest(client_order_id=bad.client_order_id), metadata=auth, timeout=10
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND


async def test_internal_rpcs_are_not_served(edge: grpc.aio.Channel) -> None:
    # identity.IssueDelegation (services' own work) has no REST binding: the edge does not know it.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await idn_grpc.IdentityServiceStub(edge).IssueDelegation(idn.IssueDelegationRequest(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_plaintext_is_refused(platform: RunningPlatform) -> None:
    async with grpc.aio.insecure_channel(edge_target(platform.settings)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await md_grpc.MarketDataServiceStub(channel).GetQuote(
                md.GetQuoteRequest(symbol="BTC-USD"), timeout=5
            )
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
