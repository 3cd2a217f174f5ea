"""What every fault scenario shares: a platform on servers of its own, a
trader who keeps trading through the fault, a health watcher, and the
reconciliation that proves nothing was lost or counted twice.

A scenario is: start (``fault_platform``), trade (``Trader``), break something
for real (kill -9 a server process group or a service), bring it back, stop
trading, then ``reconcile``. The servers are this scenario's own (PostgreSQL,
Redis, NATS and the Kafka broker on spare ports, started by a ``LocalInfra``
the scenario holds, so it can kill and restart them); the services run as
``./dev run`` runs them (tools.supervisor), which restarts a crashed service.

The reconciliation, exactly in Decimal:

- every order the trader saw accepted exists once (by client order id), no
  order exists the trader never sent, and every order reached a final state;
- every order's fills on Kafka (distinct by execution id: the relay may
  deliver twice, consumers must not count twice) add up to its filled quantity;
- portfolio's position per instrument equals the signed sum of those fills;
- audit's replay of the tenant equals execution's and portfolio's live state,
  and its hash chain verifies;
- the health watcher saw the outage while it lasted and SERVING everywhere after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2
from trading.audit.v1 import audit_service_pb2 as apb
from trading.audit.v1 import audit_service_pb2_grpc as apb_grpc
from trading.common.v1 import market_pb2
from trading.common.v1 import types_pb2 as common_types
from trading.execution.v1 import events_pb2 as exec_events
from trading.execution.v1 import execution_service_pb2 as epb
from trading.execution.v1 import execution_service_pb2_grpc as epb_grpc
from trading.execution.v1 import types_pb2 as exec_types
from trading.marketdata.v1 import marketdata_service_pb2 as mpb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as mpb_grpc
from trading.portfolio.v1 import portfolio_service_pb2 as ppb
from trading.portfolio.v1 import portfolio_service_pb2_grpc as ppb_grpc

from runtime.config import Settings
from runtime.decimals import from_proto, to_proto
from tests.integration.test_hot_path_e2e import (
    KafkaRecord,
    new_tenant,
    operator_env,
    read_topics,
    trading_models,
)
from tests.support.polling import eventually
from tests.support.processes import pid_listening_on
from tests.support.security import as_user, secure_channel
from tools.infra import LocalInfra, ManagedProcess, free_port
from tools.supervisor import check_health, isolated_settings, platform_running

if TYPE_CHECKING:
    from trading.audit.v1.audit_service_pb2_grpc import AuditServiceAsyncStub
    from trading.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub
    from trading.marketdata.v1.marketdata_service_pb2_grpc import MarketDataServiceAsyncStub
    from trading.portfolio.v1.portfolio_service_pb2_grpc import PortfolioServiceAsyncStub

# The order path and its record: identity (the tenant, delegations),
# marketdata (quotes for the paper venue and risk), risk, execution,
# portfolio, audit. The rest plays no part in an order's life.
SERVICES = ("identity", "marketdata", "risk", "execution", "portfolio", "audit")
SYMBOLS = ("BTC-USD", "ETH-USD")
QUANTITY = Decimal("0.01")
SCOPES = ("orders:read", "orders:write", "portfolio:read", "audit:read", "marketdata:read", "admin")
FILLS_TOPIC = "trading.execution.fills"
TERMINAL = frozenset(
    {
        exec_types.ORDER_STATUS_FILLED,
        exec_types.ORDER_STATUS_CANCELED,
        exec_types.ORDER_STATUS_REJECTED,
        exec_types.ORDER_STATUS_EXPIRED,
    }
)
# What a trader's client retries with the same client order id (the
# placement's idempotency key): the platform said "not now", not "no".
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
SERVING = health_pb2.HealthCheckResponse.SERVING
# Kept short so a scenario stays well under a minute on 2 cores: a component
# failing this long is reported stuck (NOT_SERVING).
STUCK_AFTER_S = 2.0


@dataclass
class FaultPlatform:
    settings: Settings
    infra: LocalInfra
    tenant: str
    marketdata: MarketDataServiceAsyncStub
    execution: ExecutionServiceAsyncStub
    portfolio: PortfolioServiceAsyncStub
    audit: AuditServiceAsyncStub
    slug: str = ""  # the tenant's login slug (its admin: admin@<slug>.test, ADMIN_PASSWORD)

    def md(self, service: str) -> tuple[tuple[str, str], ...]:
        """A call to `service` for the scenario's tenant, as the gateway."""
        return as_user(self.settings, service, self.tenant, subject="trader-faults", scopes=SCOPES)

    def server(self, name: str) -> ManagedProcess:
        """The scenario's own server process: postgres, redis, nats or kafka."""
        return self.infra.started[name]


@contextlib.asynccontextmanager
async def fault_platform(
    infra_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    services: Sequence[str] = SERVICES,
    replicas: int = 1,
) -> AsyncIterator[FaultPlatform]:
    """The platform on servers of its own, a fresh tenant, quotes flowing
    (``replicas`` processes of each service: tools.supervisor.plan_replicas)."""
    # Its var dir (the PostgreSQL data among it) not under pytest's basetemp:
    # any pytest session starting on the machine chmods /tmp/pytest-of-<user>
    # to 0700, and PostgreSQL's unprivileged user could not restart from there.
    with tempfile.TemporaryDirectory(prefix="fault-platform-") as var_dir:
        async with _fault_platform(infra_settings, Path(var_dir), monkeypatch, services, replicas) as p:
            yield p


@contextlib.asynccontextmanager
async def _fault_platform(
    infra_settings: Settings,
    var_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    services: Sequence[str],
    replicas: int,
) -> AsyncIterator[FaultPlatform]:
    settings = isolated_settings(infra_settings, var_dir)
    # A PostgreSQL server of its own (isolated_settings shares the session's
    # server), durable: a kill -9 must not lose a commit it acknowledged.
    pg_port = free_port()
    settings.postgres.dsn = f"postgresql://postgres@127.0.0.1:{pg_port}/trading"
    settings.postgres.admin_dsn = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    settings.telemetry.log_level = "WARNING"
    settings.marketdata.feed = "synthetic"
    settings.marketdata.feed_symbols = list(SYMBOLS)
    settings.marketdata.feed_rate = 20.0
    settings.marketdata.feed_seed = 20261206
    settings.health.stuck_after_s = STUCK_AFTER_S
    # Durable, as in production: the broker's kill -9 must not lose a record.
    settings.kafka.storage = "s3"
    operator_env(monkeypatch)
    if "decision" in services:
        # Strategies trade: features warm up in ~2 s at 50 ticks/s per symbol,
        # and decision loads small models trained here (as the hot-path test does).
        settings.marketdata.feed_rate = 100.0
        await trading_models(settings, SYMBOLS, monkeypatch)
    # Started here, so the scenario holds the processes; the platform's own
    # LocalInfra finds them answering and reuses them.
    async with (
        LocalInfra(settings) as infra,
        platform_running(settings, services, ready_timeout=90.0 * replicas, replicas=replicas),
        secure_channel(settings, settings.address_of("marketdata"), "marketdata") as mch,
        secure_channel(settings, settings.address_of("execution"), "execution") as ech,
        secure_channel(settings, settings.address_of("portfolio"), "portfolio") as pch,
        secure_channel(settings, settings.address_of("audit"), "audit") as ach,
    ):
        slug = f"t-fault-{uuid.uuid4().hex[:10]}"
        tenant = await new_tenant(settings, "t-fault", slug)
        p = FaultPlatform(
            settings,
            infra,
            tenant,
            mpb_grpc.MarketDataServiceStub(mch),
            epb_grpc.ExecutionServiceStub(ech),
            ppb_grpc.PortfolioServiceStub(pch),
            apb_grpc.AuditServiceStub(ach),
            slug,
        )
        for symbol in SYMBOLS:
            await _quoted(p, symbol)
        yield p


async def _quoted(p: FaultPlatform, symbol: str) -> None:
    async def probe() -> bool:
        try:
            reply = await p.marketdata.GetQuote(
                mpb.GetQuoteRequest(symbol=symbol), metadata=p.md("marketdata"), timeout=5
            )
        except grpc.aio.AioRpcError:
            return False
        return from_proto(reply.quote.bid_price) > 0

    await eventually(probe, 30.0, f"a quote of {symbol}")


# ------------------------------------------------------------------ breaking things


def crash(server: ManagedProcess) -> None:
    """kill -9 of the server and every process of its group (PostgreSQL's
    backends, say): a machine losing the process, not a shutdown."""
    assert server.pid is not None and server.alive, server
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.kill()  # reaps it


def revive(server: ManagedProcess, timeout: float = 60.0) -> None:
    """Start the crashed server again on the same port and the same storage."""
    server.start().wait_ready(timeout)


def crash_service(p: FaultPlatform, name: str, replica: int = 0) -> int:
    """kill -9 of service `name` (its `replica`-th process); returns the pid it had."""
    pid = pid_listening_on(p.settings.replica_addresses(name)[replica])
    os.kill(pid, signal.SIGKILL)
    return pid


# ------------------------------------------------------------------ the trader


@dataclass
class Attempt:
    at: float  # monotonic
    client_order_id: str
    code: str  # "OK" or the gRPC status code's name


@dataclass
class Trader:
    """Places market IOC orders one after another, as a careful client does:
    each with its own client order id, retried with the same id while the
    platform answers "not now" (RETRYABLE), never given up on."""

    p: FaultPlatform
    interval_s: float = 0.15
    attempts: list[Attempt] = field(default_factory=list)
    accepted: dict[str, exec_types.Order] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # definitive non-OK answers
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Trader:
        self._task = asyncio.create_task(self._run(), name="fault-trader")
        return self

    async def stop(self, timeout: float = 60.0) -> None:
        """Stop after the order in flight has its definitive answer."""
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, timeout)

    async def trading(self, seconds: float) -> None:
        """Let it trade for `seconds`, failing early if the trader died."""
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=seconds)
        if done:
            self._task.result()
            raise AssertionError("the trader stopped on its own")

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            symbol = SYMBOLS[n % len(SYMBOLS)]
            # Two buys then a sell per symbol: positions move both ways and stay open.
            side = common_types.SIDE_SELL if (n // len(SYMBOLS)) % 3 == 2 else common_types.SIDE_BUY
            await self._place(f"fault-{n:05d}-{uuid.uuid4().hex[:6]}", symbol, side)
            n += 1
            await asyncio.sleep(self.interval_s)

    async def _place(self, client_order_id: str, symbol: str, side: int) -> None:
        request = epb.PlaceOrderRequest(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,  # type: ignore[arg-type]
            type=market_pb2.ORDER_TYPE_MARKET,
            time_in_force=exec_types.TIME_IN_FORCE_IOC,
            quantity=to_proto(QUANTITY),
        )
        while True:
            try:
                reply = await self.p.execution.PlaceOrder(request, metadata=self.p.md("execution"), timeout=3)
            except grpc.aio.AioRpcError as exc:
                self.attempts.append(Attempt(time.monotonic(), client_order_id, exc.code().name))
                if exc.code() in RETRYABLE:
                    await asyncio.sleep(0.2)
                    continue
                self.refused[client_order_id] = f"{exc.code().name}: {exc.details()}"
                return
            self.attempts.append(Attempt(time.monotonic(), client_order_id, "OK"))
            self.accepted[client_order_id] = reply.order
            return

    def seen(self, since: float, until: float) -> Counter[str]:
        """Answers the trader got between two monotonic instants."""
        return Counter(a.code for a in self.attempts if since <= a.at <= until)

    def first_ok_after(self, instant: float) -> float | None:
        return next((a.at for a in self.attempts if a.code == "OK" and a.at >= instant), None)


# ------------------------------------------------------------------ watching health


@dataclass
class HealthWatch:
    """Samples every service's grpc.health.v1 status (as an orchestrator
    would, over mutual TLS as the operator) every `interval_s`."""

    settings: Settings
    names: Sequence[str] = SERVICES
    interval_s: float = 0.25
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> HealthWatch:
        self._task = asyncio.create_task(self._run(), name="fault-health-watch")
        return self

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            at = time.monotonic()
            statuses = await asyncio.gather(
                *(check_health(self.settings, n, timeout=0.5) for n in self.names)
            )
            self.samples.extend((at, n, s) for n, s in zip(self.names, statuses, strict=True))
            await asyncio.sleep(self.interval_s)

    def not_serving(self, since: float, until: float) -> set[str]:
        """Services seen other than SERVING (or not answering) in the window."""
        return {n for at, n, s in self.samples if since <= at <= until and s != SERVING}

    async def all_serving(self, timeout: float = 60.0) -> float:
        """Wait until every service answers SERVING; returns when (monotonic)."""

        async def probe() -> float | None:
            statuses = await asyncio.gather(*(check_health(self.settings, n) for n in self.names))
            return time.monotonic() if all(s == SERVING for s in statuses) else None

        return await eventually(probe, timeout, "every service SERVING", interval=0.2)


# ------------------------------------------------------------------ reconciliation


@dataclass
class Reconciled:
    orders: int
    fills: int
    duplicate_deliveries: int  # fill events Kafka carried more than once (consumers must dedupe)
    audit_events: int


async def list_orders(p: FaultPlatform) -> list[exec_types.Order]:
    orders: list[exec_types.Order] = []
    token = ""
    while True:
        page = await p.execution.ListOrders(
            epb.ListOrdersRequest(page_size=500, page_token=token), metadata=p.md("execution"), timeout=10
        )
        orders.extend(page.orders)
        token = page.next_page_token
        if not token:
            return orders


async def reconcile(
    p: FaultPlatform, trader: Trader, refusals_allowed: frozenset[str] = frozenset()
) -> Reconciled:
    """`refusals_allowed`: the status codes a definitive refusal may carry in
    this scenario (a refusal the trader sees is not a loss: the order was
    never accepted, and nothing may be stored for it but a rejection)."""
    unexpected = {c: r for c, r in trader.refused.items() if r.split(":", 1)[0] not in refusals_allowed}
    assert not unexpected, f"definitive refusals: {unexpected}"
    assert trader.accepted, "the trader placed nothing"

    async def settled() -> list[exec_types.Order] | None:
        orders = await list_orders(p)
        return orders if all(o.status in TERMINAL for o in orders) else None

    orders = await eventually(settled, 60.0, "every order in a final state")
    by_client = Counter(o.client_order_id for o in orders)
    assert max(by_client.values()) == 1, [c for c, n in by_client.items() if n > 1]
    refused_but_stored = [
        o.client_order_id
        for o in orders
        if o.client_order_id in trader.refused and o.status != exec_types.ORDER_STATUS_REJECTED
    ]
    assert not refused_but_stored, f"refused, yet stored as live orders: {refused_but_stored}"
    assert set(by_client) - set(trader.refused) == set(trader.accepted), (
        f"accepted but missing: {sorted(set(trader.accepted) - set(by_client))}; "
        f"never sent: {sorted(set(by_client) - set(trader.accepted))}"
    )
    filled = [o for o in orders if from_proto(o.filled_quantity) > 0]
    assert filled, "nothing filled"

    # Fills on Kafka, each once by execution id, adding up per order. Read
    # until every filled order's fills are there: the relay may have
    # published a fill twice (at least once across a crash), so counting
    # records could stop before a distinct fill was read.
    def distinct_fills(records: list[KafkaRecord]) -> dict[str, exec_types.Fill]:
        return {
            r.payload.fill.execution_id: r.payload.fill
            for r in records
            if isinstance(r.payload, exec_events.OrderFillReported)
        }

    def filled_per_order(fills: dict[str, exec_types.Fill]) -> dict[str, Decimal]:
        per_order: dict[str, Decimal] = defaultdict(Decimal)
        for f in fills.values():
            per_order[f.order_id] += from_proto(f.quantity)
        return per_order

    def every_fill_read(records: list[KafkaRecord]) -> bool:
        per_order = filled_per_order(distinct_fills(records))
        return all(per_order.get(o.order_id, Decimal(0)) >= from_proto(o.filled_quantity) for o in filled)

    records = await read_topics(p.settings, p.tenant, [FILLS_TOPIC], every_fill_read)
    fills = distinct_fills(records)
    deliveries: Counter[str] = Counter(
        r.payload.fill.execution_id for r in records if isinstance(r.payload, exec_events.OrderFillReported)
    )
    per_order = filled_per_order(fills)
    for o in orders:
        assert per_order.get(o.order_id, Decimal(0)) == from_proto(o.filled_quantity), (
            f"order {o.client_order_id}: fills on Kafka {per_order.get(o.order_id)} "
            f"!= filled {from_proto(o.filled_quantity)}"
        )

    # Positions equal the signed fills per instrument, once each.
    want_positions: dict[str, Decimal] = defaultdict(Decimal)
    for f in fills.values():
        qty = from_proto(f.quantity)
        want_positions[f.symbol] += qty if f.side == common_types.SIDE_BUY else -qty

    async def booked() -> dict[str, Decimal] | None:
        reply = await p.portfolio.GetPositions(
            ppb.GetPositionsRequest(include_closed=True), metadata=p.md("portfolio"), timeout=10
        )
        got = {pos.symbol: from_proto(pos.quantity) for pos in reply.positions}
        return got if all(got.get(s, Decimal(0)) == q for s, q in want_positions.items()) else None

    try:
        await eventually(booked, 60.0, "positions equal to the fills")
    except AssertionError:
        reply = await p.portfolio.GetPositions(
            ppb.GetPositionsRequest(include_closed=True), metadata=p.md("portfolio"), timeout=10
        )
        got = {pos.symbol: str(from_proto(pos.quantity)) for pos in reply.positions}
        raise AssertionError(f"positions {got} != fills {dict(want_positions)}") from None

    # Audit: its replay of the tenant equals the live state; its chain verifies.
    async def replayed() -> apb.ReplayTenantResponse | None:
        reply: apb.ReplayTenantResponse = await p.audit.ReplayTenant(
            apb.ReplayTenantRequest(), metadata=p.md("audit"), timeout=30
        )
        return reply if reply.consistent and reply.orders_compared == len(orders) else None

    replay = await eventually(replayed, 60.0, "audit's replay consistent with the live state", interval=1.0)
    chain = await p.audit.VerifyChain(apb.VerifyChainRequest(), metadata=p.md("audit"), timeout=10)
    assert chain.ok, chain
    return Reconciled(
        orders=len(orders),
        fills=len(fills),
        duplicate_deliveries=sum(n - 1 for n in deliveries.values()),
        audit_events=int(replay.events_replayed),
    )


def report(
    name: str,
    trader: Trader,
    outage: tuple[float, float],
    recovery_s: float | None,
    r: Reconciled,
    unhealthy: set[str],
) -> None:
    """One line per scenario (pytest -s, and the CI log): what README's fault table is made of.

    `outage` is (fault began, fault ended) in monotonic seconds; `recovery_s`
    how long after it ended trading worked again (for a crashed service: from
    the kill until it was SERVING again)."""
    began, ended = outage
    line = {
        "fault": name,
        "outage_s": round(ended - began, 2),
        "trader_saw": dict(trader.seen(began, ended + (recovery_s or 0.0))),
        "refused": len(trader.refused),
        "not_serving_during": sorted(unhealthy),
        "recovery_s": None if recovery_s is None else round(recovery_s, 2),
        "orders": r.orders,
        "fills": r.fills,
        "duplicate_deliveries_deduped": r.duplicate_deliveries,
        "audit_events": r.audit_events,
        "lost": 0,
    }
    print(f"FAULT-RESULT {json.dumps(line)}", flush=True)
