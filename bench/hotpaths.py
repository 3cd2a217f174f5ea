"""The paths of the trading hot path and the public API (issues 3 and 4);
order placement and the gateway, alone and under load, are in bench.orders:

- JWT validation with the gateway's verifier (services.identity.tokens);
- market data per hop and the AI decision end to end, both from one run of
  the synthetic feed at the brief's 1,000 ticks/s with a strategy trading;
- tick throughput: the feed rate stepped up until features falls behind.

Timestamps that cross processes are wall clock (time.time_ns) on one
machine; everything else is perf_counter. Direct gRPC calls play the gateway
acting for a user (or execution, for risk.CheckOrder) over mutual TLS with
context tokens (bench.context).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import duration_pb2
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from trading.decision.v1 import decision_service_pb2 as dpb
from trading.decision.v1 import decision_service_pb2_grpc as dpb_grpc
from trading.execution.v1 import events_pb2 as exec_events
from trading.execution.v1 import types_pb2 as exec_types
from trading.features.v1 import events_pb2 as features_events
from trading.risk.v1 import risk_service_pb2 as rpb
from trading.risk.v1 import risk_service_pb2_grpc as rpb_grpc

from bench.context import Context as Ctx
from bench.context import as_user, channel
from bench.feed import CONSUMED, TICKS_ACCEPTED, counter, metrics_url
from bench.harness import Recorder, closed_loop
from bench.model import Result, measured
from gateway.auth import jwks_fetcher
from gateway.config import GatewayOptions
from runtime import decimals
from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.grpc_client import ClientFactory
from runtime.messaging import decode_envelope, unpack
from runtime.messaging.nats.connect import connect_nats
from runtime.security.nats_permissions import HARNESS
from services.identity.keys import public_jwk
from services.identity.seed import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG
from services.identity.tokens import JwksVerifier

QUOTE_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "AAPL")
STRATEGY_SYMBOLS = ("BTC-USD", "ETH-USD")
ORDER_SCOPES = frozenset(
    {"orders:read", "orders:write", "risk:read", "risk:write", "strategies:read", "strategies:write"}
)
# A tick whose vector or order has not shown up after this many ticks is forgotten.
_TICK_MEMORY = 400_000


def _timed(started: float) -> float:
    return round(time.monotonic() - started, 2)


def _md(settings: Settings, audience: str, tenant: str) -> tuple[tuple[str, str], ...]:
    """The gateway calling ``audience`` for a benchmark user of ``tenant``."""
    return as_user(settings, audience, tenant, ORDER_SCOPES)


async def _open_limits(settings: Settings, tenant: str, *, max_quote_age_s: int = 5) -> None:
    """Risk limits of a benchmark tenant: its order rate (50/s by default) and
    sizes are not what is measured, so they never deny; every check still runs.
    An idle platform has no feed: its paths allow old quotes (the age is still checked)."""
    limits = rpb.RiskLimits(
        max_orders_per_second=10_000,
        max_order_notional=decimals.to_proto(Decimal(1_000_000_000)),
        default_max_position=decimals.to_proto(Decimal(1_000_000)),
        price_collar_bps=500,
        daily_loss_limit=decimals.to_proto(Decimal(1_000_000_000)),
        max_quote_age=duration_pb2.Duration(seconds=max_quote_age_s),
    )
    async with channel(settings, "risk") as risk_channel:
        risk = rpb_grpc.RiskServiceStub(risk_channel)
        request = rpb.SetLimitsRequest(limits=limits)
        await risk.SetLimits(request, metadata=_md(settings, "risk", tenant), timeout=10)


def _find(doc: Any, key: str) -> Any:
    """The first value of `key` anywhere in a JSON document."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        for value in doc.values():
            found = _find(value, key)
            if found is not None:
                return found
    if isinstance(doc, list):
        for value in doc:
            found = _find(value, key)
            if found is not None:
                return found
    return None


def gateway_url(ctx: Ctx) -> str:
    gw = ctx.stack.settings.gateway
    return f"http://{gw.host}:{gw.http_port}"


async def login(client: httpx.AsyncClient) -> str:
    """The demo trader's access token (POST /v1/auth/login, as the README's walkthrough does)."""
    token, _ = await login_session(client)
    return token


async def login_session(client: httpx.AsyncClient) -> tuple[str, str]:
    """The demo trader's access token and tenant id."""
    reply = await client.post(
        "/v1/auth/login", json={"tenantSlug": DEMO_SLUG, "email": DEMO_EMAIL, "password": DEMO_PASSWORD}
    )
    reply.raise_for_status()
    token = _find(reply.json(), "accessToken") or _find(reply.json(), "access_token")
    tenant = _find(reply.json(), "tenantId") or _find(reply.json(), "tenant_id")
    if not isinstance(token, str) or not isinstance(tenant, str):
        raise RuntimeError(f"no access token or tenant in the login answer: {reply.text[:300]}")
    return token, tenant


# ------------------------------------------------------------------------------ JWT


async def jwt_validation(ctx: Ctx) -> list[Result]:
    """services.identity.tokens.JwksVerifier (what the gateway runs) with the
    JWKS fetched from identity: a new token each call (ECDSA verify and claim
    checks) and the same token again (the verified-token cache)."""
    options = GatewayOptions()
    results: list[Result] = []
    clients = ClientFactory(ctx.stack.settings, principal="gateway")
    try:
        fetch_identity = jwks_fetcher(clients)
        identity_keys = list((await fetch_identity()).get("keys", []))
        async with httpx.AsyncClient(base_url=gateway_url(ctx), timeout=10) as client:
            token = await login(client)
        # Distinct tokens with the claims identity issues, signed by a key of
        # our own published next to identity's: every call is a cache miss.
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = public_jwk(key.public_key())
        claims = jwt.decode(token, options={"verify_signature": False})
        count = ctx.mode.jwt_samples + ctx.mode.warmup
        tokens = [
            jwt.encode(
                {**claims, "jti": str(uuid.uuid4())}, key, algorithm="ES256", headers={"kid": jwk["kid"]}
            )
            for _ in range(count)
        ]

        async def fetch() -> dict[str, Any]:
            return {"keys": [*identity_keys, jwk]}

        verifier = JwksVerifier(fetch, issuer=options.jwt_issuer, audience=options.jwt_audience)
        fresh = iter(tokens)

        async def verify_new() -> None:
            await verifier.verify(next(fresh))

        started = time.monotonic()
        rec = await closed_loop(verify_new, samples=ctx.mode.jwt_samples, warmup=ctx.mode.warmup)
        results.append(
            measured(
                "jwt", "jwt", "JwksVerifier.verify, uncached: a new ES256 access token each call", rec,
                method="closed loop, in process", duration_s=_timed(started),
                extra={"token_bytes": len(token)},
                notes="The gateway's verifier (kid lookup, ES256 signature, iss/aud/exp, required "
                "claims) over tokens with identity's claims; what every first request of a token costs.",
            )
        )  # fmt: skip

        real = JwksVerifier(fetch_identity, issuer=options.jwt_issuer, audience=options.jwt_audience)
        await real.verify(token)

        async def verify_same() -> None:
            await real.verify(token)

        started = time.monotonic()
        rec = await closed_loop(verify_same, samples=ctx.mode.jwt_samples, warmup=ctx.mode.warmup)
        results.append(
            measured(
                "jwt_cached", "jwt", "JwksVerifier.verify, cached: the demo trader's token again", rec,
                method="closed loop, in process", duration_s=_timed(started),
                notes="A token issued by identity (login), keys from identity's GetJwks; after the first "
                "call a dict lookup and an expiry check (the steady state of a client reusing its token).",
            )
        )  # fmt: skip
    finally:
        await clients.close()
    return results


# ------------------------------------------------------------------------------ hot path


@dataclass
class _Seen:
    occurred_ns: int  # the Tick envelope's occurred_at: marketdata's receive_time
    arrived_ns: int  # when the tick reached the benchmark's subscriber


class _HotPathProbe:
    """Subscribes to ticks, feature vectors and one tenant's order updates on
    core NATS and links them by correlation id (features and decision carry
    the tick's event id along: features as the vector's correlation id,
    decision into PlaceOrder's context, execution into its order events)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.recording = False
        self.ticks: OrderedDict[str, _Seen] = OrderedDict()
        self.md_hop = Recorder()
        self.features_hop = Recorder()
        self.two_hops = Recorder()
        self.decision = Recorder()
        self.counts = {"ticks": 0, "vectors": 0, "vectors_unmatched": 0, "orders": 0, "orders_unmatched": 0}
        self.registry = event_registry()

    async def on_tick(self, msg: Msg) -> None:
        now = time.time_ns()
        envelope = decode_envelope(msg.data)
        seen = _Seen(envelope.occurred_at.ToNanoseconds(), now)
        self.ticks[envelope.event_id] = seen
        if len(self.ticks) > _TICK_MEMORY:
            self.ticks.popitem(last=False)
        if self.recording:
            self.counts["ticks"] += 1
            self.md_hop.record_ns(now - seen.occurred_ns)

    async def on_vector(self, msg: Msg) -> None:
        now = time.time_ns()
        if not self.recording:
            return
        envelope = decode_envelope(msg.data)
        self.counts["vectors"] += 1
        seen = self.ticks.get(envelope.correlation_id)
        if seen is None:
            self.counts["vectors_unmatched"] += 1
            return
        self.features_hop.record_ns(now - seen.arrived_ns)
        self.two_hops.record_ns(now - seen.occurred_ns)

    async def on_order(self, msg: Msg) -> None:
        now = time.time_ns()
        if not self.recording:
            return
        envelope = decode_envelope(msg.data)
        payload = unpack(envelope, self.registry)
        if not isinstance(payload, exec_events.OrderStatusChanged):
            return
        if payload.previous_status != exec_types.ORDER_STATUS_UNSPECIFIED:
            return  # not the order's first update
        self.counts["orders"] += 1
        seen = self.ticks.get(envelope.correlation_id)
        if seen is None:
            self.counts["orders_unmatched"] += 1
            return
        self.decision.record_ns(now - seen.occurred_ns)


async def hot_path(ctx: Ctx) -> list[Result]:
    """The synthetic feed at 1,000 ticks/s over the eight instruments and a
    tenant's strategy trading two of them: per-hop latency of the tick path
    and tick -> order acknowledged. When the pipeline does not keep up at
    that rate (features consuming less than marketdata publishes), the next
    lower rate of the mode is tried too; the rows of the highest rate that
    kept up carry the path's keys, those of faster rates are kept as
    diagnostics.

    The strategy belongs to the demo tenant: decision places a strategy's
    orders under a delegation identity issues only for an existing, active
    tenant (runtime.security.delegations), so a made-up tenant id would trade
    nothing. Each rate has a strategy of its own."""
    async with httpx.AsyncClient(base_url=gateway_url(ctx), timeout=10) as client:
        _, tenant = await login_session(client)
    attempts: list[tuple[float, list[Result], bool]] = []
    for rate in ctx.mode.hot_rates_per_s:
        if attempts:
            # A backlog left by the faster rate must not count against the next one.
            await ctx.stack.feed.stop()
            facts_wait = await wait_idle(ctx, ("features", "decision", "execution"))
            print(f"bench:   backlog drained in {facts_wait:.1f}s", file=sys.stderr, flush=True)
        rows, facts = await _hot_path_at(ctx, rate, tenant)
        two_hops = rows[3].latency_ms.get("p99") if rows[3].has_numbers else None
        md_rate, ft_rate = facts["marketdata_accepted_per_s"], facts["features_consumed_per_s"]
        kept, why = judge(rate, md_rate, ft_rate, two_hops)
        # decision sees the vectors of the strategy's symbols (2 of the feed's 8).
        want = ft_rate * len(STRATEGY_SYMBOLS) / 8
        handled = facts.get("decision_vectors_handled_per_s", 0.0)
        if kept and handled < 0.9 * want:
            kept, why = False, f"decision handled {handled:,.0f} of {want:,.0f} vectors/s"
        facts["why"] = why
        facts["kept_up"] = kept
        rows[0].extra.update(kept_up=kept, why=why)
        attempts.append((rate, rows, kept))
        print(
            f"bench:   hot path at {rate:,.0f} ticks/s: "
            f"marketdata {facts['marketdata_accepted_per_s']:,.0f}/s, "
            f"features {facts['features_consumed_per_s']:,.0f}/s, {facts['orders']} orders; "
            + why,
            file=sys.stderr, flush=True,
        )  # fmt: skip
        if kept:
            break
    results: list[Result] = []
    for rate, rows, kept in attempts:
        if not kept and rate != attempts[-1][0]:
            for r in rows:
                r.key = f"{r.key}_at_{rate:g}"
                r.name = f"diagnostic, pipeline fell behind at this rate: {r.name}"
        results.extend(rows)
    return results


async def wait_idle(ctx: Ctx, services: tuple[str, ...], timeout_s: float = 60.0) -> float:
    """Wait until the services' consumers stop consuming (their counters hold
    still for a second): what a previous rate left queued is worked off."""
    started = time.monotonic()
    urls = [metrics_url(ctx.stack.settings, s) for s in services]
    last = -1.0
    async with httpx.AsyncClient() as http:
        while time.monotonic() - started < timeout_s:
            now = sum([await counter(http, url, CONSUMED, {}) for url in urls])
            if now == last:
                break
            last = now
            await asyncio.sleep(1.0)
    return time.monotonic() - started


async def _decision_means(http: httpx.AsyncClient, url: str) -> tuple[float, float, float, float]:
    """(sum, count) of decision's per-vector handling and vector -> PlaceOrder answer histograms."""
    return (
        await counter(http, url, "trading_decision_vector_seconds_sum", {}),
        await counter(http, url, "trading_decision_vector_seconds_count", {}),
        await counter(http, url, "trading_decision_order_latency_seconds_sum", {}),
        await counter(http, url, "trading_decision_order_latency_seconds_count", {}),
    )


async def _hot_path_at(ctx: Ctx, rate_per_s: float, tenant: str) -> tuple[list[Result], dict[str, Any]]:
    settings = ctx.stack.settings
    mode = ctx.mode
    probe = _HotPathProbe(tenant)
    started = time.monotonic()
    feed = await ctx.stack.feed.run_at(rate_per_s)
    nc = await connect_nats(settings, HARNESS, connect_timeout=2, pending_size=256 * 1024 * 1024)
    strategy_id = f"bench-{ctx.run_id}-momentum-{rate_per_s:.0f}"
    try:
        subs = [
            *[
                await nc.subscribe(f"{subject}.{symbol}", cb=cb, pending_msgs_limit=1_000_000)
                for symbol in STRATEGY_SYMBOLS
                for subject, cb in (
                    ("marketdata.ticks", probe.on_tick),
                    ("features.vectors", probe.on_vector),
                )
            ],
            await nc.subscribe(f"execution.orders.{tenant}.>", cb=probe.on_order),
        ]
        await nc.flush()
        await _open_limits(settings, tenant)
        async with (
            channel(settings, "decision") as decision_channel,
            httpx.AsyncClient() as http,
        ):
            decision = dpb_grpc.DecisionServiceStub(decision_channel)
            spec = dpb.StrategySpec(
                name="benchmark momentum",
                symbols=list(STRATEGY_SYMBOLS),
                enabled=True,
                max_position=decimals.to_proto(Decimal(50)),
                sizing=dpb.OrderSizing(fixed_quantity=decimals.to_proto(Decimal("0.01"))),
                model_ids=["gbt-trend", "logreg-trend"],
                # Low enough that the trained models trade (tests/integration/test_hot_path_e2e.py);
                # the cooldown bounds orders to ~20/s per symbol.
                signal_threshold=0.01,
                cooldown=duration_pb2.Duration(nanos=50_000_000),
            )
            await decision.SetStrategy(
                dpb.SetStrategyRequest(strategy_id=strategy_id, spec=spec),
                metadata=_md(settings, "decision", tenant),
                timeout=10,
            )
            try:
                await asyncio.sleep(mode.hot_warmup_s)
                md_url, ft_url = feed.metrics_url, metrics_url(settings, "features")
                dc_url = metrics_url(settings, "decision")
                ticks0 = await counter(http, md_url, TICKS_ACCEPTED, {})
                feat0 = await counter(http, ft_url, CONSUMED, {"consumer": "features-ticks"})
                dc0 = await _decision_means(http, dc_url)
                t0 = time.monotonic()
                probe.recording = True
                await asyncio.sleep(mode.hot_seconds)
                probe.recording = False
                t1 = time.monotonic()
                ticks1 = await counter(http, md_url, TICKS_ACCEPTED, {})
                feat1 = await counter(http, ft_url, CONSUMED, {"consumer": "features-ticks"})
                dc1 = await _decision_means(http, dc_url)
            finally:
                with contextlib.suppress(Exception):
                    await decision.SetStrategyEnabled(
                        dpb.SetStrategyEnabledRequest(strategy_id=strategy_id, enabled=False),
                        metadata=_md(settings, "decision", tenant), timeout=10,
                    )  # fmt: skip
        for sub in subs:
            await sub.unsubscribe()
    finally:
        await nc.close()
    window = t1 - t0
    facts: dict[str, Any] = {
        "feed_rate_per_s": rate_per_s,
        "marketdata_accepted_per_s": round((ticks1 - ticks0) / window, 1),
        "features_consumed_per_s": round((feat1 - feat0) / window, 1),
        **probe.counts,
        "window_s": round(window, 1),
    }
    # decision's own histograms (Prometheus): mean handling time of a vector
    # of a traded symbol, and mean vector arrival -> PlaceOrder answer.
    vectors, orders = dc1[1] - dc0[1], dc1[3] - dc0[3]
    if vectors:
        facts["decision_vectors_handled_per_s"] = round(vectors / window, 1)
        facts["decision_mean_vector_ms"] = round(1000 * (dc1[0] - dc0[0]) / vectors, 2)
    if orders:
        facts["decision_mean_vector_to_order_answer_ms"] = round(1000 * (dc1[2] - dc0[2]) / orders, 2)
    duration = _timed(started)
    rate = f"{rate_per_s:,.0f} ticks/s"
    method = (
        f"synthetic feed at {rate} over 8 instruments (paced by the feed, open loop), "
        f"{mode.hot_seconds:g} s recorded after {mode.hot_warmup_s:g} s; wall-clock timestamps"
    )
    rows = [
        measured(
            "ai_decision", "ai_decision",
            "tick received by marketdata -> the order's first OrderStatusChanged on NATS "
            f"(strategy on 2 symbols, {rate})", probe.decision,
            method=method, duration_s=duration, extra=facts,
            notes="Start: the tick's receive_time (marketdata stamps it, then publishes). End: the "
            "order's first update reaching a NATS subscriber, published by execution's outbox relay "
            "right after the PlaceOrder transaction commits (decision gets the PlaceOrder answer at "
            "about the same moment). In between: marketdata -> NATS -> features -> NATS -> decision "
            "(2 models, signal rows in PostgreSQL) -> execution.PlaceOrder (risk.CheckOrder, paper "
            "fill, PostgreSQL) -> relay -> NATS. Orders are linked to their tick by correlation id.",
        ),
        measured(
            "market_data_hop", "market_data_hop",
            f"hop 1, marketdata: tick received -> Tick delivered on NATS ({rate})", probe.md_hop,
            method=method, duration_s=duration, floor="floor_nats",
            notes="receive_time (stamped when marketdata normalises a feed batch) to a subscriber's "
            "callback: normalisation, the Redis quote write, NATS publish, delivery. Ticks of a batch "
            "share one receive_time.",
        ),
        measured(
            "market_data_hop_features", "market_data_hop",
            f"hop 2, features: Tick delivered -> FeatureVectorComputed delivered ({rate})",
            probe.features_hop, method=method, duration_s=duration, floor="floor_nats",
            notes="The same tick seen by the benchmark's subscriber and by features; features' "
            "indicators update and its vector's publish and delivery. Matched by correlation id.",
        ),
        measured(
            "market_data_two_hops", "market_data_hop",
            f"diagnostic: both hops, tick received -> feature vector delivered ({rate})", probe.two_hops,
            method=method, duration_s=duration,
            notes="Hop 1 plus hop 2 (the goal is per hop; this row is for reading them together).",
        ),
    ]  # fmt: skip
    return rows, facts


# ------------------------------------------------------------------------------ throughput


@dataclass
class Step:
    rate_per_s: float  # asked of the feed
    marketdata_per_s: float
    features_per_s: float
    latency: Recorder
    kept_up: bool
    why: str

    def to_json(self) -> dict[str, Any]:
        summary = self.latency.summary()
        return {
            "rate_per_s": self.rate_per_s,
            "marketdata_per_s": round(self.marketdata_per_s, 1),
            "features_per_s": round(self.features_per_s, 1),
            "latency_p50_ms": summary.get("p50"),
            "latency_p99_ms": summary.get("p99"),
            "latency_samples": int(summary.get("count", 0)),
            "kept_up": self.kept_up,
            "why": self.why,
        }


# Keeping up: features consumed what marketdata published (NATS core drops
# what a slow consumer cannot take), the feed reached its rate, and the
# vectors are not piling up behind.
_KEEP_RATIO = 0.98
_FEED_RATIO = 0.95
_MAX_P99_MS = 250.0
# Latency samples per second taken from the vector stream (decoding all of them would load the bench process).
_LATENCY_SAMPLES_PER_S = 500


def judge(rate: float, md_rate: float, ft_rate: float, p99_ms: float | None) -> tuple[bool, str]:
    """Whether a step kept up, and why not."""
    if md_rate < _FEED_RATIO * rate:
        return False, f"marketdata published {md_rate:,.0f}/s of {rate:,.0f}/s asked"
    if ft_rate < _KEEP_RATIO * md_rate:
        return False, f"features consumed {ft_rate:,.0f}/s of {md_rate:,.0f}/s published"
    if p99_ms is None or p99_ms > _MAX_P99_MS:
        return False, f"tick -> vector p99 {p99_ms} ms (backlog)"
    return True, "kept up"


async def _step(ctx: Ctx, http: httpx.AsyncClient, nc: NatsClient, rate: float) -> Step:
    feed = await ctx.stack.feed.run_at(rate)
    latency = Recorder()
    every = max(1, round(rate / _LATENCY_SAMPLES_PER_S))
    seen = itertools.count()
    recording = False

    async def on_vector(msg: Msg) -> None:
        if not recording or next(seen) % every:
            return
        now = time.time_ns()
        payload = unpack(decode_envelope(msg.data), registry)
        assert isinstance(payload, features_events.FeatureVectorComputed)
        latency.record_ns(now - payload.vector.as_of.ToNanoseconds())

    registry = event_registry()
    sub = await nc.subscribe("features.vectors.>", cb=on_vector, pending_msgs_limit=2_000_000)
    try:
        await asyncio.sleep(ctx.mode.throughput_warmup_s)
        md_url, ft_url = feed.metrics_url, metrics_url(ctx.stack.settings, "features")
        md0 = await counter(http, md_url, TICKS_ACCEPTED, {})
        ft0 = await counter(http, ft_url, CONSUMED, {"consumer": "features-ticks"})
        t0 = time.monotonic()
        recording = True
        await asyncio.sleep(ctx.mode.throughput_window_s)
        recording = False
        md1 = await counter(http, md_url, TICKS_ACCEPTED, {})
        ft1 = await counter(http, ft_url, CONSUMED, {"consumer": "features-ticks"})
        t1 = time.monotonic()
    finally:
        await sub.unsubscribe()
    md_rate, ft_rate = (md1 - md0) / (t1 - t0), (ft1 - ft0) / (t1 - t0)
    p99 = latency.summary().get("p99")
    kept, why = judge(rate, md_rate, ft_rate, p99)
    return Step(rate, md_rate, ft_rate, latency, kept, why)


# When even the first rate falls short, the search halves it at most this often.
_MAX_STEPS_DOWN = 3


async def tick_throughput(ctx: Ctx) -> list[Result]:
    """The feed rate stepped up (marketdata restarted per step) until features falls behind."""
    started = time.monotonic()
    steps: list[Step] = []
    nc = await connect_nats(ctx.stack.settings, HARNESS, connect_timeout=2, pending_size=512 * 1024 * 1024)
    try:
        async with httpx.AsyncClient() as http:
            rates = list(ctx.mode.throughput_rates)
            while rates:
                rate = rates.pop(0)
                step = await _step(ctx, http, nc, rate)
                steps.append(step)
                print(
                    f"bench:   throughput {rate:>8,.0f}/s asked: "
                    f"marketdata {step.marketdata_per_s:,.0f}/s, features "
                    f"{step.features_per_s:,.0f}/s, p99 {step.latency.summary().get('p99')} ms: {step.why}",
                    file=sys.stderr,
                    flush=True,
                )
                if step.kept_up:
                    continue
                if not any(s.kept_up for s in steps) and len(steps) <= _MAX_STEPS_DOWN:
                    rates = [rate / 2]  # even the first step fell short: step down to find what holds
                    continue
                break
    finally:
        await nc.close()
        await ctx.stack.feed.stop()
    kept = [s for s in steps if s.kept_up]
    best = max(kept, key=lambda s: s.features_per_s) if kept else None
    shown = best or steps[0]
    sustained = round(best.features_per_s) if best else 0
    limit = next((s for s in steps if not s.kept_up), None)
    return [
        measured(
            "tick_throughput", "tick_throughput",
            f"highest sustained rate: {sustained:,} ticks/s through marketdata and features "
            "(latency: tick -> feature vector delivered at that rate)", shown.latency,
            method="synthetic feed rate stepped up, marketdata restarted per step; rates from both "
            "services' Prometheus counters; latency sampled from the vector stream",
            duration_s=_timed(started),
            extra={
                "sustained_rate_per_s": sustained,
                "first_failing_rate_per_s": limit.rate_per_s if limit else None,
                "steps": [s.to_json() for s in steps],
            },
            notes="A step keeps up when features consumes >= 98% of what marketdata published, "
            "marketdata reaches >= 95% of the asked rate and tick -> vector p99 stays under "
            f"{_MAX_P99_MS:g} ms. "
            + (f"The next step fell short: {limit.why}." if limit else "No step fell short."),
        )
    ]  # fmt: skip


__all__ = [
    "hot_path",
    "judge",
    "jwt_validation",
    "login",
    "tick_throughput",
]
