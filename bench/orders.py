"""Order placement and the user API, each measured twice: with the platform
idle (no feed) and while the feed runs at 1,000 ticks/s through marketdata,
features and decision; each client round trip beside the server-side
handling time from the serving process's own histogram (bench.serverside).
And the open-loop sustained-throughput search of order placement, gRPC
PlaceOrder and REST POST /v1/orders, like the tick throughput search.

Direct gRPC calls play the gateway acting for a user (or execution, for
risk.CheckOrder) over mutual TLS with context tokens (bench.context).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from trading.common.v1 import market_pb2, types_pb2
from trading.execution.v1 import execution_service_pb2 as epb
from trading.execution.v1 import execution_service_pb2_grpc as epb_grpc
from trading.execution.v1 import types_pb2 as exec_types
from trading.marketdata.v1 import marketdata_service_pb2 as md_pb
from trading.risk.v1 import risk_service_pb2 as rpb
from trading.risk.v1 import risk_service_pb2_grpc as rpb_grpc
from trading_client import AsyncTradingClient

from bench.context import Context as Ctx
from bench.context import as_execution_for_user, channel
from bench.feed import counter, metrics_url
from bench.harness import OpenLoopTracker, Recorder, closed_loop, open_loop
from bench.hotpaths import (
    ORDER_SCOPES,
    QUOTE_SYMBOLS,
    STRATEGY_SYMBOLS,
    _find,
    _md,
    _open_limits,
    gateway_url,
    login_session,
    wait_idle,
)
from bench.model import Result, from_open_loop, measured
from bench.serverside import (
    PLACE_ORDER_STAGES,
    Buckets,
    Probe,
    Window,
    closed_loop_with_server,
    gateway_probe,
    grpc_probe,
    server_side,
    stage_probes,
)
from bench.stack import BASELINE_FEED_RATE
from gateway.edge import edge_ca_file, edge_target
from runtime import decimals
from services.identity.seed import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG

PLACE_ORDER = grpc_probe("execution", "/trading.execution.v1.ExecutionService/PlaceOrder")
CHECK_ORDER = grpc_probe("risk", "/trading.risk.v1.RiskService/CheckOrder")
PLACE_ORDER_PARTS = stage_probes("execution", PLACE_ORDER_STAGES, ("request", "risk", "venue", "store"))
REST_GET_QUOTE = gateway_probe("GET", "/v1/quotes/{symbol}")
REST_POST_ORDER = gateway_probe("POST", "/v1/orders")
# Paths measured with the feed stopped allow quotes this old (the age check
# still runs): the most risk.v1.RiskLimits allows. An idle stretch starts with
# quotes at most _FRESH_S old (else the feed writes new ones first) and ends
# well within the allowed age.
_IDLE_QUOTE_AGE_S = 300
_FRESH_S = 120.0
_FILLED = frozenset({exec_types.ORDER_STATUS_FILLED, exec_types.ORDER_STATUS_PARTIALLY_FILLED})
# The goal of a throughput step (bench.targets: order_throughput).
_STEP_GOAL_P99_MS = 10.0


def _timed(started: float) -> float:
    return round(time.monotonic() - started, 2)


# ------------------------------------------------------------------------------ conditions


@dataclass(frozen=True)
class Condition:
    """What else the platform does while a path is measured."""

    feed_rate_per_s: float  # the bench feed's rate; 0: no feed at all
    suffix: str  # of the rows' keys ("" for idle: the keys earlier runs used)
    label: str  # the rows' names start with it
    order_target: str  # bench.targets key of the order placement rows


IDLE = Condition(0.0, "", "platform idle", "order_placement")
LOADED = Condition(1_000.0, "_loaded", "1,000 ticks/s flowing", "order_placement_loaded")
# Loaded first: stopping the feed afterwards leaves the idle stretch fresh
# quotes, and the feed stopped (no restart) for what follows.
CONDITIONS = (LOADED, IDLE)


async def enter(ctx: Ctx, condition: Condition) -> str | None:
    """Put the platform in `condition`; the feed's /metrics URL (None: no feed).
    A feed restart takes seconds: a path's conditions are ordered to need few."""
    feed_control = ctx.stack.feed
    if condition.feed_rate_per_s <= 0:
        stopped_at = feed_control.stopped_at
        if feed_control.current is None and (stopped_at is None or time.monotonic() - stopped_at > _FRESH_S):
            # The quotes may be old: the baseline feed writes fresh ones first.
            await feed_control.run_at(BASELINE_FEED_RATE)
            await asyncio.sleep(0.5)
        await feed_control.stop()
        # What the feed left queued in features, decision and execution is worked off first.
        await wait_idle(ctx, ("features", "decision", "execution"), timeout_s=15)
        return None
    feed = await ctx.stack.feed.run_at(condition.feed_rate_per_s)
    await asyncio.sleep(ctx.mode.throughput_warmup_s)  # features and decision in their stride
    return feed.metrics_url


@contextlib.asynccontextmanager
async def baseline_after(ctx: Ctx) -> AsyncIterator[None]:
    """The platform's default feed rate again afterwards, as the paths after
    the order paths ran before (order throughput, the last of them, restores it)."""
    try:
        yield
    finally:
        await ctx.stack.feed.run_at(BASELINE_FEED_RATE)


@contextlib.asynccontextmanager
async def no_load_after(ctx: Ctx) -> AsyncIterator[None]:
    """A path that fails while loaded must not leave the 1,000 ticks/s feed running for the next."""
    try:
        yield
    finally:
        current = ctx.stack.feed.current
        if current is not None and current.rate_per_s == LOADED.feed_rate_per_s:
            await ctx.stack.feed.stop()


def _load_note(window: Window) -> str:
    load = window.load
    return (
        f"While measured: marketdata published {load.get('marketdata_ticks_per_s', 0):,.0f} ticks/s, "
        f"features consumed {load.get('features_ticks_per_s', 0):,.0f}/s."
    )


# ------------------------------------------------------------------------------ order placement


def _order_request(run_id: str, tag: str, n: int, quantity: Any) -> epb.PlaceOrderRequest:
    """Market IOC with a fresh client order id; buy and sell in turn on two symbols."""
    return epb.PlaceOrderRequest(
        client_order_id=f"bench-{run_id}-{tag}-{n}",
        symbol=STRATEGY_SYMBOLS[n % 2],
        side=types_pb2.SIDE_BUY if (n // 2) % 2 == 0 else types_pb2.SIDE_SELL,
        type=market_pb2.ORDER_TYPE_MARKET,
        time_in_force=exec_types.TIME_IN_FORCE_IOC,
        quantity=quantity,
    )


async def order_placement(ctx: Ctx) -> list[Result]:
    """execution.PlaceOrder over gRPC (unique client order ids, market IOC,
    alternating sides) and risk.CheckOrder alone (risk's own check), idle and
    at 1,000 ticks/s, client and server side."""
    settings = ctx.stack.settings
    tenant = f"bench-{ctx.run_id}-orders"
    results: list[Result] = []
    counter_ = itertools.count()
    quantity = decimals.to_proto(Decimal("0.01"))
    await _open_limits(settings, tenant, max_quote_age_s=_IDLE_QUOTE_AGE_S)
    async with (
        no_load_after(ctx),
        channel(settings, "execution") as ex_channel,
        # Risk is called as execution calls it inside PlaceOrder.
        channel(settings, "risk", principal="execution") as risk_channel,
    ):
        execution = epb_grpc.ExecutionServiceStub(ex_channel)
        risk = rpb_grpc.RiskServiceStub(risk_channel)
        for cond in CONDITIONS:
            feed_url = await enter(ctx, cond)
            statuses: dict[str, int] = {}

            async def place(statuses: dict[str, int] = statuses, tag: str = f"o{cond.suffix}") -> None:
                md = _md(settings, "execution", tenant)
                request = _order_request(ctx.run_id, tag, next(counter_), quantity)
                reply = await execution.PlaceOrder(request, metadata=md, timeout=5)
                name = exec_types.OrderStatus.Name(reply.order.status).removeprefix("ORDER_STATUS_")
                statuses[name] = statuses.get(name, 0) + 1

            started = time.monotonic()
            rec, window = await closed_loop_with_server(
                settings, place, [PLACE_ORDER, *PLACE_ORDER_PARTS], samples=ctx.mode.api_samples,
                warmup=ctx.mode.warmup,
                feed_metrics_url=feed_url,
            )  # fmt: skip
            results.append(
                measured(
                    f"order_placement{cond.suffix}", cond.order_target,
                    f"{cond.label}: execution.PlaceOrder over gRPC, round trip at the client "
                    "(risk check, paper fill, PostgreSQL + outbox)", rec,
                    method="closed loop, 1 mutual-TLS channel as the gateway, unique client order ids",
                    floor="floor_grpc", duration_s=_timed(started),
                    extra={"order_statuses": dict(statuses), **window.load},
                    notes="Market IOC 0.01 BTC-USD / ETH-USD, buy and sell in turn, against the last "
                    "quote. Inside: request validation, the pre-trade risk check (limits, rate, quote and "
                    "position in one Redis round trip: in execution's process by default, risk.CheckOrder "
                    "over gRPC for anything but a plain approval or with execution.risk_check=remote), the "
                    "paper venue's fill, the PostgreSQL write (order, events, outbox rows), then the relay "
                    f"publishes to Kafka and NATS outside the call. {_load_note(window)}",
                )
            )  # fmt: skip
            results.append(
                server_side(
                    f"order_placement{cond.suffix}_server", cond.order_target,
                    f"{cond.label}: execution.PlaceOrder, server-side handling time (same calls)",
                    PLACE_ORDER, window, goal_ms=1.2, stages=PLACE_ORDER_PARTS,
                    notes="The calls of the row above as execution's server interceptor timed them.",
                )
            )  # fmt: skip

            async def check(tag: str = f"chk{cond.suffix}") -> None:
                n = next(counter_)
                await risk.CheckOrder(
                    rpb.CheckOrderRequest(
                        client_order_id=f"bench-{ctx.run_id}-{tag}-{n}", symbol="BTC-USD",
                        side=types_pb2.SIDE_BUY, quantity=quantity, order_type=market_pb2.ORDER_TYPE_MARKET,
                    ),
                    metadata=as_execution_for_user(settings, tenant, ORDER_SCOPES), timeout=5,
                )  # fmt: skip

            started = time.monotonic()
            rec, window = await closed_loop_with_server(
                settings, check, [CHECK_ORDER], samples=ctx.mode.api_samples, warmup=ctx.mode.warmup,
                feed_metrics_url=feed_url,
            )  # fmt: skip
            results.append(
                measured(
                    f"order_placement_risk_check{cond.suffix}", cond.order_target,
                    f"{cond.label}, diagnostic: risk.CheckOrder alone, round trip at the client "
                    "(the risk service's own check)", rec,
                    method="closed loop, 1 mutual-TLS channel as execution (chained context token)",
                    floor="floor_grpc", duration_s=_timed(started), extra=dict(window.load),
                    notes="The risk service's check called directly, as execution calls it when its "
                    "in-process check is not a plain approval (every check with "
                    f"execution.risk_check=remote). {_load_note(window)}",
                )
            )  # fmt: skip
            results.append(
                server_side(
                    f"order_placement_risk_check{cond.suffix}_server", cond.order_target,
                    f"{cond.label}, diagnostic: risk.CheckOrder, server-side handling time (same calls)",
                    CHECK_ORDER, window, goal_ms=1.2,
                )
            )  # fmt: skip
    return _idle_first(results)


def _idle_first(results: list[Result]) -> list[Result]:
    """The report lists the idle rows first (they are measured second: see CONDITIONS)."""
    return sorted(results, key=lambda r: LOADED.suffix in r.key)


# ------------------------------------------------------------------------------ gateway


def _order_body(run_id: str, tag: str, i: int) -> dict[str, Any]:
    return {
        "clientOrderId": f"bench-{run_id}-{tag}-{i}",
        "symbol": "BTC-USD",
        "side": "SIDE_BUY" if i % 2 == 0 else "SIDE_SELL",
        "type": "ORDER_TYPE_MARKET",
        "timeInForce": "TIME_IN_FORCE_IOC",
        "quantity": {"value": "0.001"},
    }


async def _post_order(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    body: dict[str, Any],
    statuses: dict[str, int] | None = None,
) -> None:
    """POST /v1/orders with a fresh Idempotency-Key (the client order id), as
    a client that retries safely sends it."""
    headers = {**auth, "Idempotency-Key": body["clientOrderId"]}
    reply = await client.post("/v1/orders", json=body, headers=headers)
    if reply.status_code not in (200, 201):
        raise RuntimeError(f"POST /v1/orders answered {reply.status_code}: {reply.text[:200]}")
    status = str(_find(reply.json(), "status"))
    if statuses is not None:
        statuses[status] = statuses.get(status, 0) + 1
    elif "FILLED" not in status:  # the throughput search: a refusal is not a placed order
        raise RuntimeError(f"order {status}")


async def gateway_call(ctx: Ctx) -> list[Result]:
    """GET /v1/quotes/{symbol} with the demo trader's bearer token (closed
    loop) and POST /v1/orders at a modest fixed rate (open loop), idle and at
    1,000 ticks/s, each beside the gateway's own handling time."""
    results: list[Result] = []
    settings = ctx.stack.settings
    async with no_load_after(ctx), httpx.AsyncClient(base_url=gateway_url(ctx), timeout=10) as client:
        token, tenant = await login_session(client)
        auth = {"Authorization": f"Bearer {token}"}
        # The open-loop POSTs catch up in bursts when the sender runs late on a
        # loaded machine: risk's default 50 orders/s would deny some of them.
        await _open_limits(settings, tenant, max_quote_age_s=_IDLE_QUOTE_AGE_S)
        symbols = itertools.cycle(QUOTE_SYMBOLS)
        for cond in CONDITIONS:
            feed_url = await enter(ctx, cond)

            async def get_quote() -> None:
                reply = await client.get(f"/v1/quotes/{next(symbols)}", headers=auth)
                if reply.status_code != 200:
                    raise RuntimeError(f"GET /v1/quotes answered {reply.status_code}: {reply.text[:300]}")

            started = time.monotonic()
            rec, window = await closed_loop_with_server(
                settings, get_quote, [REST_GET_QUOTE], samples=ctx.mode.api_samples, warmup=ctx.mode.warmup,
                feed_metrics_url=feed_url,
            )  # fmt: skip
            results.append(
                measured(
                    f"gateway_call{cond.suffix}", "gateway_call",
                    f"{cond.label}: GET /v1/quotes/{{symbol}} through the gateway, round trip at the client "
                    "(JWT, rate limit, marketdata.GetQuote)", rec,
                    method="closed loop, 1 keep-alive HTTP/1.1 connection (httpx)", floor="floor_grpc",
                    duration_s=_timed(started), extra=dict(window.load),
                    notes="Gateway work per call: bearer token check (JwksVerifier, cached after the first "
                    "call), per-tenant rate-limit step in Redis (limit raised so it never trips), route "
                    "match, JSON -> protobuf, one gRPC call (marketdata reads the quote from Redis), "
                    f"protobuf -> JSON. The client (httpx) is part of the measurement. {_load_note(window)}",
                )
            )  # fmt: skip
            results.append(
                server_side(
                    f"gateway_call{cond.suffix}_server", "gateway_call",
                    f"{cond.label}: GET /v1/quotes/{{symbol}}, the gateway's handling time (same requests)",
                    REST_GET_QUOTE, window, goal_ms=5,
                    notes="From the route match's start to the response (ASGI app; hypercorn's HTTP "
                    "parsing and the client are outside).",
                )
            )  # fmt: skip
            if cond is IDLE:
                results.append(await _edge_get_quote(ctx))
            results.extend(await _gateway_posts(ctx, client, auth, cond, feed_url))
    return _idle_first(results)


async def _gateway_posts(
    ctx: Ctx, client: httpx.AsyncClient, auth: dict[str, str], cond: Condition, feed_url: str | None
) -> list[Result]:
    """POST /v1/orders open loop at the mode's modest rate, with the gateway's
    and execution's handling time of the same requests."""
    tag = f"gw{cond.suffix}"
    warmup_failures = 0
    for i in range(min(20, ctx.mode.warmup)):  # warm-up, before the window; its failures are only counted
        try:
            await _post_order(client, auth, _order_body(ctx.run_id, f"{tag}-w", i))
        except (httpx.HTTPError, RuntimeError):
            warmup_failures += 1
    tracker = OpenLoopTracker(warmup=0)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[str] = []
    statuses: dict[str, int] = {}

    async def place(i: int) -> None:
        try:
            await _post_order(client, auth, _order_body(ctx.run_id, tag, i), statuses)
        except (httpx.HTTPError, RuntimeError) as exc:
            failures.append(repr(exc))
            return
        tracker.complete(i)

    async def send(i: int) -> None:
        task = asyncio.create_task(place(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    started = time.monotonic()
    rate = ctx.mode.post_rate_per_s
    async with Window(ctx.stack.settings, [REST_POST_ORDER, PLACE_ORDER], feed_url) as window:
        run = await open_loop(send, tracker, count=ctx.mode.post_count, rate_per_s=rate, drain_timeout_s=15)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    result = from_open_loop(
        f"gateway_post_order{cond.suffix}", "gateway_order",
        f"{cond.label}: POST /v1/orders through the gateway at {rate:g}/s, round trip at the client "
        "(execution.PlaceOrder with the risk check)", run, floor="floor_grpc",
        notes="Demo tenant (risk limits opened so they never deny), market IOC 0.001 BTC alternating "
        "buy/sell, a fresh client order id and Idempotency-Key each. A write: token check, rate limit, "
        "idempotency record, JSON -> protobuf, PlaceOrder (risk.CheckOrder, paper fill, one PostgreSQL "
        f"transaction with the outbox rows). {_load_note(window)}",
    )  # fmt: skip
    result.duration_s = _timed(started)
    result.extra.update(order_statuses=statuses, **window.load)
    if failures:
        result.extra["failures"] = len(failures)
        result.extra["first_failure"] = failures[0]
    if warmup_failures:
        result.extra["warmup_failures"] = warmup_failures
    return [
        result,
        server_side(
            f"gateway_post_order{cond.suffix}_server", "gateway_order",
            f"{cond.label}: POST /v1/orders, the gateway's handling time (same requests)",
            REST_POST_ORDER, window, goal_ms=10,
        ),
        server_side(
            f"gateway_post_order{cond.suffix}_execution_server", "gateway_order",
            f"{cond.label}, diagnostic: execution.PlaceOrder's server-side handling time inside those POSTs",
            PLACE_ORDER, window,
        ),
    ]  # fmt: skip


async def _edge_get_quote(ctx: Ctx) -> Result:
    """marketdata.GetQuote through the public gRPC edge with the Python SDK
    (clients/python: TLS, bearer token from its login, one HTTP/2 connection),
    beside REST and the floor."""
    settings = ctx.stack.settings
    symbols = itertools.cycle(QUOTE_SYMBOLS)
    started = time.monotonic()
    async with AsyncTradingClient(
        edge_target(settings), ca_file=edge_ca_file(settings), login=(DEMO_SLUG, DEMO_EMAIL, DEMO_PASSWORD)
    ) as client:
        get_quote = client.marketdata.GetQuote

        async def call() -> None:
            await get_quote(md_pb.GetQuoteRequest(symbol=next(symbols)))

        rec = await closed_loop(call, samples=ctx.mode.api_samples, warmup=ctx.mode.warmup)
    return measured(
        "edge_get_quote", "gateway_call",
        "platform idle: marketdata.GetQuote through the public gRPC edge with the Python SDK (TLS, JWT, "
        "rate limit)", rec,
        method="closed loop, 1 HTTP/2 connection (trading_client.AsyncTradingClient)", floor="floor_grpc",
        duration_s=_timed(started),
        notes="The same gateway work as GET /v1/quotes/{symbol} (token check, rate limit, method policy) "
        "without JSON: the edge parses the request once and passes the reply's bytes through; the SDK adds "
        "its credential and deadline per call.",
    )  # fmt: skip


# ------------------------------------------------------------------------------ throughput


@dataclass
class RateStep:
    """One open-loop step of the order throughput search."""

    rate_per_s: float  # asked
    achieved_per_s: float  # completions per second over the step
    sent: int
    completed: int
    failed: int
    latency: Recorder  # completion - intended send (the step's warm-up not recorded)
    sender_late_p99_ms: float | None
    server: Buckets | None  # the server's histogram delta over the step (warm-up included)
    kept_up: bool
    why: str

    def to_json(self) -> dict[str, Any]:
        summary = self.latency.summary()
        server = self.server.summary_ms() if self.server is not None else {}
        return {
            "rate_per_s": self.rate_per_s,
            "achieved_per_s": round(self.achieved_per_s, 1),
            "sent": self.sent,
            "completed": self.completed,
            "failed": self.failed,
            "latency_p50_ms": summary.get("p50"),
            "latency_p99_ms": summary.get("p99"),
            "latency_samples": int(summary.get("count", 0)),
            "sender_late_p99_ms": self.sender_late_p99_ms,
            "server_p50_ms": server.get("p50"),
            "server_p99_ms": server.get("p99"),
            "kept_up": self.kept_up,
            "why": self.why,
        }


# A step keeps up when this share of the asked rate completed.
_ACHIEVED_RATIO = 0.95


def judge_step(
    rate: float, achieved: float, failed: int, missing: int, p99_ms: float | None
) -> tuple[bool, str]:
    """Whether an order throughput step was sustained, and why not."""
    if failed or missing:
        return False, f"{failed} failed, {missing} unanswered"
    if achieved < _ACHIEVED_RATIO * rate:
        return False, f"completed {achieved:,.0f}/s of {rate:,.0f}/s asked"
    if p99_ms is None or p99_ms >= _STEP_GOAL_P99_MS:
        return False, f"p99 {p99_ms} ms (goal < {_STEP_GOAL_P99_MS:g} ms)"
    return True, "kept up"


async def _rate_step(ctx: Ctx, call: Callable[[int], Awaitable[None]], rate: float, probe: Probe) -> RateStep:
    mode = ctx.mode
    warm = round(rate * mode.order_step_warmup_s)
    count = warm + max(1, round(rate * mode.order_step_s))
    tracker = OpenLoopTracker(warmup=warm)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[str] = []
    last_done = [0]

    async def one(i: int) -> None:
        try:
            await call(i)
        except Exception as exc:
            failures.append(repr(exc))
            return
        tracker.complete(i)
        last_done[0] = tracker.clock()

    async def send(i: int) -> None:
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with Window(ctx.stack.settings, [probe], None) as window:
        # Unanswered 5 s after the last send is unanswered (PlaceOrder's deadline).
        run = await open_loop(send, tracker, count=count, rate_per_s=rate, drain_timeout_s=5)
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    recorded = sum(1 for i in tracker.done if i >= warm)
    first = tracker.intended[warm] if warm < count else tracker.intended[0]
    span_s = (last_done[0] - first) / 1e9 if last_done[0] > first else math.inf
    achieved = recorded / span_s
    p99 = run.latency.summary().get("p99")
    kept, why = judge_step(rate, achieved, len(failures), run.missing - len(failures), p99)
    if failures:
        why += f" (first: {' '.join(failures[0].split())[:200]})"
    return RateStep(
        rate, achieved, run.sent, run.completed, len(failures), run.latency,
        run.sender_lateness.summary().get("p99"), window.deltas.get(probe), kept, why,
    )  # fmt: skip


async def _drain_outbox(ctx: Ctx, timeout_s: float = 5.0) -> None:
    """Wait until execution's outbox relay has published what a step committed:
    its work must not be charged to the next step."""
    url = metrics_url(ctx.stack.settings, "execution")
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if await counter(http, url, "outbox_backlog", {}) <= 0:
                return
            await asyncio.sleep(0.2)


async def _search(
    ctx: Ctx, label: str, call: Callable[[int], Awaitable[None]], probe: Probe
) -> list[RateStep]:
    """Rates rising until a step is not sustained; when even the first is not,
    the rate is halved (at most mode.order_steps_down times)."""
    steps: list[RateStep] = []
    rates = list(ctx.mode.order_rates_per_s)
    while rates:
        rate = rates.pop(0)
        step = await _rate_step(ctx, call, rate, probe)
        steps.append(step)
        summary = step.latency.summary()
        print(
            f"bench:   {label} {rate:>6,.0f}/s asked: completed {step.achieved_per_s:,.0f}/s, "
            f"p50 {summary.get('p50')} p99 {summary.get('p99')} ms: {step.why}",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        await _drain_outbox(ctx)
        if step.kept_up:
            continue
        if not any(s.kept_up for s in steps) and len(steps) <= ctx.mode.order_steps_down:
            rates = [rate / 2]
            continue
        break
    return steps


def _throughput_row(key: str, what: str, steps: list[RateStep], started: float, notes: str) -> Result:
    kept = [s for s in steps if s.kept_up]
    best = max(kept, key=lambda s: s.rate_per_s) if kept else None
    # Without a sustained step the lowest rate tried is shown (its latency says why).
    shown = best or min(steps, key=lambda s: s.rate_per_s)
    sustained = round(best.achieved_per_s) if best else 0
    limit = next((s for s in steps if not s.kept_up), None)
    at = f"{shown.rate_per_s:,.0f}/s"
    return measured(
        key, "order_throughput",
        f"{what}: highest sustained rate {sustained:,} orders/s, platform idle "
        f"(latency at {at}: completion - intended send)", shown.latency,
        method="open loop, rising rates, each request's send time fixed in advance (coordinated omission "
        "counted); a step passes when it completes >= 95% of the asked rate, nothing fails and p99 < "
        f"{_STEP_GOAL_P99_MS:g} ms",
        floor="floor_grpc", duration_s=_timed(started),
        extra={
            "unit": "orders/s",
            "sustained_rate_per_s": sustained,
            "shown_rate_per_s": shown.rate_per_s,
            "first_failing_rate_per_s": limit.rate_per_s if limit else None,
            "steps": [s.to_json() for s in steps],
        },
        notes=f"{notes} " + (f"The next step fell short: {limit.why}." if limit else "No step fell short."),
    )  # fmt: skip


async def order_throughput(ctx: Ctx) -> list[Result]:
    """Sustained order placement rate, open loop, with the platform idle: gRPC
    execution.PlaceOrder, then REST POST /v1/orders through the gateway."""
    settings = ctx.stack.settings
    results: list[Result] = []
    quantity = decimals.to_proto(Decimal("0.01"))
    run_tag = uuid.uuid4().hex[:6]
    async with baseline_after(ctx):
        await enter(ctx, IDLE)
        tenant = f"bench-{ctx.run_id}-tput"
        await _open_limits(settings, tenant, max_quote_age_s=_IDLE_QUOTE_AGE_S)
        started = time.monotonic()
        async with channel(settings, "execution") as ex_channel:
            execution = epb_grpc.ExecutionServiceStub(ex_channel)
            md = _md(settings, "execution", tenant)
            ids = itertools.count()

            async def place(i: int) -> None:
                request = _order_request(ctx.run_id, f"t{run_tag}", next(ids), quantity)
                reply = await execution.PlaceOrder(request, metadata=md, timeout=5)
                if reply.order.status not in _FILLED:  # a refusal is not a placed order
                    raise RuntimeError(f"order {exec_types.OrderStatus.Name(reply.order.status)}")

            steps = await _search(ctx, "PlaceOrder", place, PLACE_ORDER)
        results.append(
            _throughput_row(
                "order_throughput_grpc", "execution.PlaceOrder over gRPC", steps, started,
                "One mutual-TLS HTTP/2 channel (calls multiplexed), a fresh client order id per call, "
                "market IOC 0.01 on two symbols, buy and sell in turn; server-side p50/p99 per step in the "
                "steps table.",
            )
        )  # fmt: skip

        await enter(ctx, IDLE)  # fresh quotes again if the gRPC search took minutes
        started = time.monotonic()
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(base_url=gateway_url(ctx), timeout=5, limits=limits) as client:
            token, demo = await login_session(client)
            auth = {"Authorization": f"Bearer {token}"}
            await _open_limits(settings, demo, max_quote_age_s=_IDLE_QUOTE_AGE_S)
            ids = itertools.count()

            async def post(i: int) -> None:
                await _post_order(client, auth, _order_body(ctx.run_id, f"t{run_tag}", next(ids)))

            steps = await _search(ctx, "POST /v1/orders", post, REST_POST_ORDER)
        results.append(
            _throughput_row(
                "order_throughput_rest", "POST /v1/orders through the gateway", steps, started,
                "httpx, up to 256 keep-alive HTTP/1.1 connections, a fresh client order id and "
                "Idempotency-Key per request, market IOC 0.001 BTC, buy and sell in turn; the gateway's "
                "handling p50/p99 per step in the steps table.",
            )
        )  # fmt: skip
    return results


__all__ = ["CONDITIONS", "gateway_call", "judge_step", "order_placement", "order_throughput"]
