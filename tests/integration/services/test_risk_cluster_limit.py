"""The correlated-cluster exposure limit through risk's CheckOrder, on real
Redis, Kafka (tansu) and NATS: analytics' CorrelationClustersComputed reaches
risk's consumers (Kafka group and core NATS queue group, published with the
analytics principal's own NATS credentials), fills build a position, and an
order that the per-instrument limits allow is denied because of the
exposure its cluster would carry."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import Sequence

import pytest
from redis.asyncio import Redis
from trading.analytics.v1 import events_pb2 as analytics_events
from trading.common.v1 import decimal_pb2, market_pb2, types_pb2
from trading.execution.v1 import events_pb2 as exec_events
from trading.execution.v1 import types_pb2 as exec_types
from trading.risk.v1 import risk_service_pb2 as pb
from trading.risk.v1 import risk_service_pb2_grpc as pb_grpc

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging.envelope import new_envelope, uuid7
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from runtime.messaging.nats.connect import connect_nats
from runtime.service import ServiceSpec
from services.risk.adapters.redis import CLUSTERS_KEY, cluster_value
from services.risk.main import SPEC, build
from tests.support.polling import eventually
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

pytestmark = pytest.mark.integration

D = decimal_pb2.Decimal
BUY, SELL = types_pb2.SIDE_BUY, types_pb2.SIDE_SELL


def spec(token: str) -> ServiceSpec:
    return dataclasses.replace(
        SPEC,
        build=functools.partial(
            build, fills_group=f"risk.fills.{token}", clusters_group=f"risk.corr.{token}"
        ),
    )


def meta(tenant: str) -> tuple[tuple[str, str], ...]:
    return user_md("risk", tenant, subject="user-1")


def new_symbol() -> str:
    return f"C{uuid.uuid4().hex[:8].upper()}-USD"


async def put_quote(redis: Redis, symbol: str) -> None:
    quote = market_pb2.Quote(symbol=symbol, bid_price=D(value="999"), ask_price=D(value="1001"), sequence=1)
    quote.receive_time.FromNanoseconds(time.time_ns())
    await redis.set(f"md:quote:{symbol}", quote.SerializeToString(), ex=600)


def market(symbol: str, side: int, qty: str) -> pb.CheckOrderRequest:
    return pb.CheckOrderRequest(
        client_order_id=f"c-{uuid.uuid4().hex[:16]}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=D(value=qty),
        order_type=market_pb2.ORDER_TYPE_MARKET,
    )


def clusters_event(*groups: Sequence[str], at_ns: int) -> analytics_events.CorrelationClustersComputed:
    event = analytics_events.CorrelationClustersComputed(
        clusters=[
            analytics_events.CorrelationCluster(
                cluster_id=sorted(g)[0], symbols=sorted(g), min_link_correlation=0.9, max_correlation=0.95
            )
            for g in groups
        ],
        symbols=sorted(s for g in groups for s in g),
        threshold=0.8,
    )
    event.bar_interval.FromSeconds(60)
    event.window_start.FromNanoseconds(at_ns - 6 * 3600 * 10**9)
    event.window_end.FromNanoseconds(at_ns)
    event.computed_at.FromNanoseconds(at_ns)
    return event


def fill_event(symbol: str, side: int, qty: str, price: str) -> exec_events.OrderFillReported:
    order_id = str(uuid7())
    fill = exec_types.Fill(
        execution_id=str(uuid7()),
        order_id=order_id,
        client_order_id=f"c-{order_id[-8:]}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        price=D(value=price),
        quantity=D(value=qty),
    )
    fill.fee.currency, fill.fee.amount.value = "USD", "0"
    fill.executed_at.FromNanoseconds(time.time_ns())
    payload = exec_events.OrderFillReported(order_id=order_id, fill=fill)
    payload.order.order_id = order_id
    return payload


async def test_the_cluster_limit_denies_what_the_position_limit_allows(
    infra_settings: Settings, redis_client: Redis
) -> None:
    tenant, other = f"tx-{uuid.uuid4().hex[:8]}", f"ty-{uuid.uuid4().hex[:8]}"
    a, b, c = new_symbol(), new_symbol(), new_symbol()
    analytics_nats = await connect_nats(infra_settings, "analytics")
    async with (
        KafkaPublisher(infra_settings.kafka, event_registry(), client_id="cluster-test") as kafka,
        running_service(spec(uuid.uuid4().hex[:8]), infra_settings) as address,
        service_channel(address, "risk") as channel,
    ):
        stub = pb_grpc.RiskServiceStub(channel)
        nats = NatsPublisher(analytics_nats, event_registry())

        async def publish(
            payload: object, *, via: KafkaPublisher | NatsPublisher, tenant_id: str = ""
        ) -> None:
            assert isinstance(
                payload, exec_events.OrderFillReported | analytics_events.CorrelationClustersComputed
            )
            envelope = new_envelope(payload, tenant_id=tenant_id, correlation_id="", producer="test")
            await via.publish(envelope, payload=payload)

        # Per instrument: 10 units, 10,000 per order; per correlated cluster: 15,000 gross.
        limits = pb.RiskLimits(
            max_orders_per_second=1000,
            max_order_notional=D(value="10000"),
            default_max_position=D(value="10"),
            price_collar_bps=100,
            daily_loss_limit=D(value="100000"),
            max_cluster_gross_notional=D(value="15000"),
        )
        stored = await stub.SetLimits(pb.SetLimitsRequest(limits=limits), metadata=meta(tenant))
        assert stored.limits.max_cluster_gross_notional.value == "15000"
        read = await stub.GetLimits(pb.GetLimitsRequest(), metadata=meta(tenant))
        assert read.limits.max_cluster_gross_notional.value == "15000"
        await stub.SetLimits(pb.SetLimitsRequest(limits=limits), metadata=meta(other))

        # The tenant holds 8 of b (8,000 at the mark); analytics finds a and b correlated.
        await publish(fill_event(b, BUY, "8", "1000"), via=kafka, tenant_id=tenant)
        first_ns = time.time_ns()
        await publish(clusters_event([a, b], at_ns=first_ns), via=kafka)

        async def cluster_of(symbol: str) -> bytes | None:
            value = await redis_client.hget(CLUSTERS_KEY, symbol)
            assert value is None or isinstance(value, bytes)
            return value

        async def stored_cluster() -> bool:
            return (
                await cluster_of(a) is not None and await redis_client.exists(f"t:{{{tenant}}}:risk:pos") > 0
            )

        await eventually(stored_cluster, 30.0, "the clusters and the fill in Redis")
        assert await cluster_of(a) == cluster_value(min(a, b), [a, b]).encode()
        for symbol in (a, b, c):
            await put_quote(redis_client, symbol)

        # 8 of a: within the position limit (10) and the order notional (8,008),
        # but the cluster would carry 8,000 + 8,008.
        denied = await stub.CheckOrder(market(a, BUY, "8"), metadata=meta(tenant))
        assert not denied.approved
        assert [(d.reason, d.code) for d in denied.denials] == [
            (pb.DENIAL_REASON_CLUSTER_EXPOSURE, "RISK_CLUSTER_EXPOSURE_EXCEEDED")
        ]
        assert (denied.denials[0].limit.value, denied.denials[0].actual.value) == ("15000", "16008")
        # Less of it fits; an uncorrelated instrument, a reduction and another tenant pass.
        assert (await stub.CheckOrder(market(a, BUY, "6"), metadata=meta(tenant))).approved
        assert (await stub.CheckOrder(market(c, BUY, "8"), metadata=meta(tenant))).approved
        assert (await stub.CheckOrder(market(b, SELL, "8"), metadata=meta(tenant))).approved
        assert (await stub.CheckOrder(market(a, BUY, "8"), metadata=meta(other))).approved

        # A newer computation over NATS (as analytics) moves a to c's cluster:
        # b no longer counts and the order passes.
        await publish(clusters_event([a, c], at_ns=time.time_ns()), via=nats)

        async def moved() -> bool:
            return (
                await cluster_of(b) is None
                and await cluster_of(a) == cluster_value(min(a, c), [a, c]).encode()
            )

        await eventually(moved, 15.0, "the clusters from NATS")
        # An older computation arriving late (Kafka) changes nothing.
        await publish(clusters_event([a, b], at_ns=first_ns + 1), via=kafka)
        await asyncio.sleep(1.0)
        assert await cluster_of(b) is None
        await put_quote(redis_client, a)
        assert (await stub.CheckOrder(market(a, BUY, "8"), metadata=meta(tenant))).approved
    await analytics_nats.close()
