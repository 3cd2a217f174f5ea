"""Wiring of the execution service: what it needs and what it serves.

The servicer and the matcher get the production adapters of their ports:
orders in PostgreSQL, marketdata's quotes from Redis, risk's check run in
this process on risk's state in Redis with risk's CheckOrder (gRPC) as the
authority for everything but plain approvals (settings: execution.risk_check).

Background work started here (stopped through ``resources.on_close``, last
registered first): the outbox relay, then the paper venue's matcher.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from trading.execution.v1 import execution_service_pb2_grpc as pb_grpc
from trading.risk.v1 import risk_service_pb2_grpc as risk_grpc

from runtime.grpc_client import ClientFactory
from runtime.outbox import OutboxRelay, PostgresOutbox
from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.execution.adapters.grpc import GrpcPreTradeRisk
from services.execution.adapters.postgres import PostgresOrderStore
from services.execution.adapters.redis import RedisMarketQuotes
from services.execution.adapters.risk import EmbeddedPreTradeRisk, RiskLiveness
from services.execution.api import ExecutionApi
from services.execution.domain import OrderEvent
from services.execution.outbox import outbox_rows
from services.execution.ports import PreTradeRisk
from services.execution.settings import ExecutionSettings
from services.execution.venue import Matcher, PaperVenue
from services.risk.adapters.redis import RedisCheckState
from services.risk.check import PreTradeCheck
from services.risk.domain import SubmissionTimeBound

EXECUTION_SERVICE = "trading.execution.v1.ExecutionService"


lifecycle_log = logging.getLogger("execution.orders")


def log_lifecycle(events: Sequence[OrderEvent]) -> None:
    """One INFO line per committed step of an order (its status change, and the
    fill that caused it): what an operator greps for first."""
    if not lifecycle_log.isEnabledFor(logging.INFO):
        return
    for event in events:
        order = event.order
        fill = event.fill
        lifecycle_log.info(
            "order %s %s: %s -> %s%s",
            order.order_id,
            order.client_order_id,
            event.previous_status.name,
            order.status.name,
            f" (fill {fill.quantity} @ {fill.price})" if fill is not None else "",
            extra={"tenant_id": order.tenant_id, "order_id": order.order_id, "event_kind": event.kind.name},
        )


async def pre_trade_risk(
    resources: Resources, clients: ClientFactory, settings: ExecutionSettings
) -> PreTradeRisk:
    """Risk's CheckOrder over gRPC, behind the embedded check unless configured "remote"."""
    remote = GrpcPreTradeRisk(
        clients.stub(risk_grpc.RiskServiceStub, "risk"), timeout_s=settings.risk_timeout_s
    )
    if settings.risk_check == "remote":
        return remote
    risk = resources.settings.risk
    state = RedisCheckState(
        resources.redis,
        time_bound=SubmissionTimeBound(risk.submitted_at_max_back_s, risk.submitted_at_max_ahead_s),
    )
    await state.load_scripts()
    alive = RiskLiveness(clients.channel("risk"))
    await alive.start()
    resources.on_close(alive.stop)
    return EmbeddedPreTradeRisk(PreTradeCheck(state), remote, risk_alive=alive)


async def build(resources: Resources, *, settings: ExecutionSettings | None = None) -> Mapping[str, Any]:
    pool, redis, nats = resources.postgres, resources.redis, resources.nats
    kafka, nats_publisher = resources.kafka_publisher, resources.nats_publisher

    store = PostgresOrderStore(pool)
    venue = PaperVenue(RedisMarketQuotes(redis))
    relay = OutboxRelay(PostgresOutbox(pool, "execution"), kafka=kafka, nats=nats_publisher)

    def changed(events: Sequence[OrderEvent]) -> None:
        relay.wake()
        matcher.note(events)
        log_lifecycle(events)

    clients = ClientFactory(resources.settings, principal=resources.service)
    resources.on_close(clients.close)
    await relay.start()
    resources.on_close(relay.stop)
    matcher = Matcher(store, venue, nats, outbox_rows, changed)
    await matcher.start()
    resources.on_close(matcher.stop)

    risk = await pre_trade_risk(resources, clients, settings or ExecutionSettings())
    return {EXECUTION_SERVICE: ExecutionApi(store, venue, risk, nats, changed)}


SPEC = ServiceSpec(
    name="execution",
    needs=("postgres", "redis", "nats", "kafka"),
    apis=[(EXECUTION_SERVICE, pb_grpc.add_ExecutionServiceServicer_to_server)],
    build=build,
)
