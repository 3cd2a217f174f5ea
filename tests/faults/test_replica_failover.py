"""Two replicas of every service, trading running (a trader over REST and a
strategy placing orders by itself); kill -9 one replica of execution, risk,
decision and marketdata in turn, mid-run.

What must hold (ADR-001 phase 1: service discovery and load balancing):

- no trader request fails: every REST order gets its answer the first time
  (the gateway's clients balance over the replicas and repeat a keyed call
  that died with its replica on the other one);
- no order is lost or doubled (harness.reconcile: orders, Kafka fills,
  positions, audit replay and hash chain), the strategy's orders are unique;
- no tick is published twice: per symbol, tick sequences on NATS strictly
  increase over the whole run (two feeds at once would interleave);
- failover time, per service, is measured and printed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from google.protobuf import duration_pb2
from nats.aio.msg import Msg
from trading.common.v1 import decimal_pb2
from trading.decision.v1 import decision_service_pb2 as dpb
from trading.decision.v1 import decision_service_pb2_grpc as dpb_grpc
from trading.execution.v1 import execution_service_pb2 as epb
from trading.execution.v1 import types_pb2 as exec_types
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.config import SERVICE_NAMES, Settings
from runtime.contracts import event_registry
from runtime.membership import owner
from runtime.messaging import decode_envelope, unpack
from runtime.messaging.nats.connect import connect_nats
from tests.faults.harness import (
    QUANTITY,
    SYMBOLS,
    TERMINAL,
    Attempt,
    FaultPlatform,
    Trader,
    crash_service,
    fault_platform,
    reconcile,
)
from tests.integration.test_hot_path_e2e import new_tenant
from tests.support.polling import eventually
from tests.support.security import as_user, secure_channel
from tools.supervisor import wait_serving

pytestmark = [
    pytest.mark.integration,
    # 21 service processes on 2 cores: not beside the contract tests' platform,
    # which runs for the whole of `./dev test`'s session. .ci/run runs it in a
    # session of its own, before the rest:
    #   TRADING_TEST_REPLICAS=1 ./dev test tests/faults/test_replica_failover.py -s
    pytest.mark.skipif(
        os.environ.get("TRADING_TEST_REPLICAS") != "1",
        reason="heavy (two replicas of every service): set TRADING_TEST_REPLICAS=1 and run it alone",
    ),
]

REPLICAS = 2
KILLED = ("execution", "risk", "decision", "marketdata")
ADMIN_PASSWORD = "admin-password-1"  # tests.integration.test_hot_path_e2e.new_tenant's
STRATEGY = "failover-momentum"
STRATEGY_SYMBOL = SYMBOLS[0]


@dataclass
class RestTrader(Trader):
    """The trader of the fault scenarios, through the REST gateway as a real
    client: each order once with its Idempotency-Key; any answer but 200 is a
    failed request (recorded, then retried with the same key so the books
    still reconcile)."""

    http: httpx.AsyncClient | None = None
    failed: list[str] = field(default_factory=list)

    async def _place(self, client_order_id: str, symbol: str, side: int) -> None:
        assert self.http is not None
        body = {
            "clientOrderId": client_order_id,
            "symbol": symbol,
            "side": "SIDE_SELL" if side == 2 else "SIDE_BUY",
            "type": "ORDER_TYPE_MARKET",
            "timeInForce": "TIME_IN_FORCE_IOC",
            "quantity": {"value": str(QUANTITY)},
        }
        while True:
            began = time.monotonic()
            try:
                reply = await self.http.post(
                    "/v1/orders", json=body, headers={"Idempotency-Key": client_order_id}, timeout=10
                )
                code = str(reply.status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            self.attempts.append(Attempt(began, client_order_id, "OK" if code == "200" else code))
            if code == "200":
                self.accepted[client_order_id] = reply.json()
                return
            detail = reply.text[:300] if code.isdigit() else ""
            self.failed.append(f"{client_order_id}: {code} {detail}")
            if len(self.failed) <= 5:
                print(f"\nREPLICA-TRADER-FAILED {self.failed[-1]}", flush=True)
            if len(self.failed) > 50 or code in ("400", "401", "403", "404", "409", "422"):
                self.refused[client_order_id] = code  # not worth repeating: the test fails on it
                return
            await asyncio.sleep(0.2)


class TickLog:
    """Every tick on NATS, with its arrival time (as execution receives them)."""

    def __init__(self) -> None:
        self.ticks: list[tuple[float, str, int]] = []  # (monotonic, symbol, sequence)

    def on(self, data: bytes) -> None:
        tick = unpack(decode_envelope(data), event_registry())
        assert isinstance(tick, md_events.Tick)
        self.ticks.append((time.monotonic(), tick.symbol, tick.sequence))

    def longest_gap(self, since: float, until: float) -> float:
        times = [t for t, _, _ in self.ticks if since - 1.0 <= t <= until]
        return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))

    def assert_each_tick_once(self) -> None:
        last: dict[str, int] = defaultdict(int)
        seen = Counter((s, q) for _, s, q in self.ticks)
        assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]
        for _, symbol, sequence in self.ticks:
            assert sequence > last[symbol], f"{symbol}: sequence {sequence} after {last[symbol]}"
            last[symbol] = sequence


async def _scrape(port: int, needle: str) -> bool:
    async with httpx.AsyncClient() as http:
        try:
            reply = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except httpx.HTTPError:
            return False
    return any(line.startswith(needle) and line.rstrip().endswith(" 1.0") for line in reply.text.splitlines())


def _metrics_port(settings: Settings, service: str, replica: int) -> int:
    return int(settings.replica_addresses(service)[replica].rsplit(":", 1)[1]) + 1000


async def _feed_leader(settings: Settings) -> int:
    """The index of the marketdata replica holding the feed lease."""

    async def find() -> list[int] | None:  # a list: replica 0 must not read as "not yet"
        for replica in range(REPLICAS):
            port = _metrics_port(settings, "marketdata", replica)
            if await _scrape(port, 'trading_lease_held{lease="marketdata.feed"}'):
                return [replica]
        return None

    return (await eventually(find, 30.0, "a marketdata feed leader"))[0]


async def _login(p: FaultPlatform) -> str:
    """An access token of the tenant's administrator, made a trader too."""
    body = {"tenantSlug": p.slug, "email": f"admin@{p.slug}.test", "password": ADMIN_PASSWORD}
    async with httpx.AsyncClient(base_url=_gateway_url(p.settings)) as http:
        reply = await http.post("/v1/auth/login", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        roles = await http.put(
            f"/v1/users/{reply.json()['userId']}/roles",
            json={"roles": ["ROLE_ADMIN", "ROLE_TRADER"]},
            headers={"Authorization": f"Bearer {reply.json()['tokens']['accessToken']}"},
            timeout=10,
        )
        assert roles.status_code == 200, roles.text
        reply = await http.post("/v1/auth/login", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
    return str(reply.json()["tokens"]["accessToken"])


def _gateway_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.gateway.http_port}"


async def _newest_signal_at(decision: dpb_grpc.DecisionServiceAsyncStub, md: object) -> datetime | None:
    reply = await decision.GetSignals(
        dpb.GetSignalsRequest(symbol=STRATEGY_SYMBOL, strategy_id=STRATEGY, page_size=1),
        metadata=md,  # type: ignore[arg-type]
        timeout=5,
    )
    if not reply.signals:
        return None
    return reply.signals[0].generated_at.ToDatetime(tzinfo=UTC)


async def test_two_replicas_of_everything_survive_kill9_of_one_replica_each(
    infra_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fault_platform(infra_settings, monkeypatch, SERVICE_NAMES, replicas=REPLICAS) as p:
        settings = p.settings
        ticks = TickLog()
        nc = await connect_nats(settings, "execution")

        async def on_tick(msg: Msg) -> None:
            ticks.on(msg.data)

        await nc.subscribe("marketdata.ticks.>", cb=on_tick)
        await nc.flush()

        # A strategy of another tenant trades by itself (decision's orders).
        strategist = await new_tenant(settings, "t-strategy")
        strategist_md = as_user(settings, "decision", strategist, subject="strategist")
        async with secure_channel(settings, settings.address_of("decision"), "decision") as dch:
            decision = dpb_grpc.DecisionServiceStub(dch)
            await decision.SetStrategy(
                dpb.SetStrategyRequest(
                    strategy_id=STRATEGY,
                    spec=dpb.StrategySpec(
                        name="failover momentum",
                        symbols=list(SYMBOLS),
                        enabled=True,
                        max_position=decimal_pb2.Decimal(value="0.04"),
                        sizing=dpb.OrderSizing(fixed_quantity=decimal_pb2.Decimal(value=str(QUANTITY))),
                        model_ids=["gbt-trend", "logreg-trend"],
                        signal_threshold=0.01,
                        cooldown=duration_pb2.Duration(nanos=250_000_000),
                    ),
                ),
                metadata=strategist_md,
                timeout=10,
            )

            async with httpx.AsyncClient(
                base_url=_gateway_url(settings), headers={"Authorization": f"Bearer {await _login(p)}"}
            ) as http:
                trader = RestTrader(p, http=http)
                trader.start()
                await trader.trading(3.0)
                await eventually(
                    lambda: _newest_signal_at(decision, strategist_md), 30.0, "the strategy's first signal"
                )
                failover: dict[str, float] = {}
                first_kill = time.monotonic()
                for service in KILLED:
                    replica = 0
                    if service == "marketdata":
                        replica = await _feed_leader(settings)
                    elif service == "decision":
                        members = [f"decision-{i + 1}" for i in range(REPLICAS)]
                        replica = members.index(owner(STRATEGY_SYMBOL, members) or "")
                    killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
                    print(f"\nREPLICA-KILL {service}-{replica + 1}", flush=True)
                    crash_service(p, service, replica)
                    await trader.trading(3.0)
                    if service == "marketdata":
                        failover[service] = ticks.longest_gap(killed_at, time.monotonic())
                    elif service == "decision":

                        async def signalled(since: datetime = killed_wall) -> datetime | None:
                            at = await _newest_signal_at(decision, strategist_md)
                            return at if at is not None and at > since else None

                        failover[service] = ((await eventually(signalled, 30.0, "a signal after the kill"))
                                             - killed_wall).total_seconds()  # fmt: skip
                    else:
                        # The longest a trader's order took around the kill.
                        took = [
                            b.at - a.at
                            for a, b in zip(trader.attempts, trader.attempts[1:], strict=False)
                            if killed_at - 1 <= b.at
                        ]
                        failover[service] = max(took, default=0.0)
                last_kill = time.monotonic()
                await trader.stop()

            # Every replica back (the supervisor restarted the killed ones).
            assert await wait_serving(settings, SERVICE_NAMES, timeout=120) == []
            await decision.SetStrategyEnabled(
                dpb.SetStrategyEnabledRequest(strategy_id=STRATEGY, enabled=False),
                metadata=strategist_md,
                timeout=10,
            )
        await nc.close()

        print(
            "\nREPLICA-FAILOVER (s) "
            + ", ".join(f"{name} {seconds:.3f}" for name, seconds in failover.items())
            + f"; trader requests {len(trader.attempts)}, failed {len(trader.failed)};"
            f" ticks {len(ticks.ticks)} over {last_kill - first_kill:.1f}s of kills",
            flush=True,
        )
        assert trader.failed == [], trader.failed
        ticks.assert_each_tick_once()
        reconciled = await reconcile(p, trader)
        print(f"REPLICA-RECONCILED {reconciled}", flush=True)
        strategy_orders = await _orders_of(p, strategist)
        assert strategy_orders, "the strategy placed no order"
        assert max(Counter(o.client_order_id for o in strategy_orders).values()) == 1
        assert all(o.status in TERMINAL for o in strategy_orders)
        assert all(s < 5.0 for s in failover.values()), failover


async def _orders_of(p: FaultPlatform, tenant: str) -> list[exec_types.Order]:
    md = as_user(p.settings, "execution", tenant, subject="strategist")
    orders: list[exec_types.Order] = []
    token = ""
    while True:
        page = await p.execution.ListOrders(
            epb.ListOrdersRequest(page_size=500, page_token=token), metadata=md, timeout=10
        )
        orders.extend(page.orders)
        token = page.next_page_token
        if not token:
            return orders
