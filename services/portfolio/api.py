"""gRPC API of the portfolio service (trading.portfolio.v1.PortfolioService).

Read-only: positions change only through fills (services.portfolio.consumers).
The tenant comes from the call's metadata, never from the request. Positions
are marked at the mid of the last quote in Redis (`md:quote:{symbol}`), at the
last trade price when a side is missing, and at their average price when no
quote exists yet (see services.portfolio.domain).

StreamPortfolio sends the current snapshot at once, then a new one when the
tenant's portfolio changes: a fill (woken by the service's own
`portfolio.positions.{tenant}` / `portfolio.updates.{tenant}` NATS events, so
every replica's streams hear every replica's fills) or a new mark (re-valued
every max(min_interval, 1 s)). Snapshots equal to the last one sent (apart
from `as_of`) are not repeated; at most one goes out per `min_interval`. The
NATS subscriptions end with the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient
from trading.portfolio.v1 import events_pb2, types_pb2
from trading.portfolio.v1 import portfolio_service_pb2 as pb

from runtime.context import require_tenant
from runtime.contracts import event_registry
from runtime.errors import FieldViolation, ServiceError, invalid_argument
from runtime.messaging.nats.live import live_subscription
from services.portfolio.views import PortfolioViews, timestamp

log = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL_S = 1.0
# Streams re-value (new marks) at least this often when no fill wakes them.
REMARK_INTERVAL_S = 1.0
# A tenant id must be one NATS subject token to name its update subjects.
_SUBJECT_TOKEN = re.compile(r"[^.*>\s]+")
_WAKE_EVENTS = (
    events_pb2.PositionChanged.DESCRIPTOR.full_name,
    events_pb2.PortfolioSnapshot.DESCRIPTOR.full_name,
)


def update_subjects(tenant_id: str) -> list[str]:
    """The NATS subjects announcing changes of a tenant's portfolio."""
    registry = event_registry()
    return [registry.route(t).nats_subject.replace("{tenant}", tenant_id) for t in _WAKE_EVENTS]


def _comparable(portfolio: types_pb2.Portfolio) -> bytes:
    """The snapshot without its as_of, for "did anything change?"."""
    copy = types_pb2.Portfolio()
    copy.CopyFrom(portfolio)
    copy.ClearField("as_of")
    return copy.SerializeToString(deterministic=True)


class PortfolioApi:
    """The PortfolioService servicer."""

    def __init__(self, views: PortfolioViews, nats_client: NatsClient) -> None:
        self._views = views
        self._nats = nats_client
        self.active_streams = 0

    async def GetPositions(
        self, request: pb.GetPositionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetPositionsResponse:
        tenant = require_tenant()
        positions, as_of = await self._views.positions(
            tenant, symbol=request.symbol or None, include_closed=request.include_closed
        )
        return pb.GetPositionsResponse(positions=positions, as_of=timestamp(as_of))

    async def GetPortfolio(
        self, request: pb.GetPortfolioRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetPortfolioResponse:
        tenant = require_tenant()
        return pb.GetPortfolioResponse(portfolio=await self._views.portfolio(tenant))

    async def StreamPortfolio(
        self, request: pb.StreamPortfolioRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.StreamPortfolioResponse]:
        tenant = require_tenant()
        if not _SUBJECT_TOKEN.fullmatch(tenant):
            raise ServiceError(
                invalid_argument([FieldViolation("", f"tenant id {tenant!r} cannot be streamed")])
            )
        min_interval = (
            request.min_interval.ToTimedelta().total_seconds()
            if request.HasField("min_interval")
            else DEFAULT_MIN_INTERVAL_S
        )
        remark = max(min_interval, REMARK_INTERVAL_S)
        include_positions = not request.exclude_positions
        self.active_streams += 1
        try:
            # Subscribed before the first snapshot, so no change falls in
            # between. Only "something changed" matters: one buffered update.
            async with live_subscription(
                self._nats, event_registry(), update_subjects(tenant), name="portfolio-stream", buffer=1
            ) as updates:
                last_sent: bytes | None = None
                sent_at = -float("inf")
                while True:
                    wait = sent_at + min_interval - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)  # throttle: changes meanwhile merge into one snapshot
                    updates.discard_pending()  # the snapshot read now includes them
                    portfolio = await self._views.portfolio(tenant, include_positions=include_positions)
                    comparable = _comparable(portfolio)
                    if comparable != last_sent:
                        yield pb.StreamPortfolioResponse(portfolio=portfolio)
                        last_sent, sent_at = comparable, time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remark):
                            await anext(updates)
        finally:
            self.active_streams -= 1
