"""The live state a replay is compared with: execution's orders and
portfolio's positions, read over gRPC (stubs from runtime.grpc_client's
ClientFactory, so deadlines, retries of these idempotent reads and circuit
breakers are the platform's). Audit reads them under an ``audit-replay``
delegation from identity for the tenant (runtime.security.delegations), not
with the rights of whoever asked for the replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from trading.execution.v1 import execution_service_pb2 as execution_pb
from trading.execution.v1 import execution_service_pb2_grpc as execution_grpc
from trading.execution.v1 import types_pb2 as execution_types
from trading.portfolio.v1 import portfolio_service_pb2 as portfolio_pb
from trading.portfolio.v1 import portfolio_service_pb2_grpc as portfolio_grpc
from trading.portfolio.v1 import types_pb2 as portfolio_types

from runtime.context import RequestContext, current_context, use_context
from runtime.grpc_client import ClientFactory
from runtime.security.delegations import PURPOSES, DelegationCache

PURPOSE = "audit-replay"

if TYPE_CHECKING:
    from trading.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub
    from trading.portfolio.v1.portfolio_service_pb2_grpc import PortfolioServiceAsyncStub

# The largest page ListOrders serves.
_ORDERS_PAGE = 500


class GrpcLiveState:
    """The LiveState port (services.audit.ports) over the execution and portfolio gRPC APIs."""

    def __init__(self, clients: ClientFactory, *, timeout_s: float) -> None:
        self._execution: ExecutionServiceAsyncStub = clients.stub(
            execution_grpc.ExecutionServiceStub,
            "execution",
        )
        self._portfolio: PortfolioServiceAsyncStub = clients.stub(
            portfolio_grpc.PortfolioServiceStub,
            "portfolio",
        )
        self._timeout_s = timeout_s
        self._delegations = DelegationCache(clients, timeout_s=timeout_s)

    @asynccontextmanager
    async def _as_audit(self) -> AsyncIterator[None]:
        """Run the block as audit, under its delegation for the current tenant."""
        ctx = current_context()
        # Audit asks identity as itself (no tenant context): the caller's
        # context is not forwarded, it would be a chain whose subject the
        # replay already changed to audit's (refused as chain_mismatch).
        with use_context(RequestContext(correlation_id=ctx.correlation_id, deadline=ctx.deadline)):
            delegation = await self._delegations.get(ctx.tenant_id, PURPOSE)
        scopes = PURPOSES[PURPOSE].scopes
        with use_context(
            replace(ctx, subject="service:audit", scopes=scopes, credential="", delegation=delegation)
        ):
            yield

    async def orders(self) -> list[execution_types.Order]:
        """Every order of the tenant, all pages."""
        found: list[execution_types.Order] = []
        token = ""
        async with self._as_audit():
            return await self._all_orders(found, token)

    async def _all_orders(
        self, found: list[execution_types.Order], token: str
    ) -> list[execution_types.Order]:
        while True:
            page = await self._execution.ListOrders(
                execution_pb.ListOrdersRequest(page_size=_ORDERS_PAGE, page_token=token),
                timeout=self._timeout_s,
            )
            found.extend(page.orders)
            token = page.next_page_token
            if not token:
                return found

    async def positions(self) -> list[portfolio_types.Position]:
        """Every position the tenant ever held, flat ones included."""
        async with self._as_audit():
            reply = await self._portfolio.GetPositions(
                portfolio_pb.GetPositionsRequest(include_closed=True), timeout=self._timeout_s
            )
        return list(reply.positions)
