"""One REST order, one trace: the gateway's HTTP span, the gRPC hops
(execution, risk), the outbox relay's publish and every consumer of the
order's events (portfolio, audit, notification) share a trace id, as the
platform's processes export them over OTLP (tests/support/otlp.py).

The events cross an outbox, published later by a relay outside any
request: they carry their origin's trace context in the envelope
(``EventEnvelope.trace_context``), which the relay's publish continues."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.contract.conftest import RunningPlatform, create_tenant
from tests.support.otlp import CollectedSpan
from tests.support.polling import eventually
from tests.support.rest import market_order

pytestmark = pytest.mark.integration

# Processes whose spans one filled market order must reach.
EXPECTED = {"gateway", "execution", "risk", "portfolio", "audit", "notification"}


async def test_one_rest_order_is_one_trace_across_every_hop(platform: RunningPlatform) -> None:
    base = f"http://127.0.0.1:{platform.settings.gateway.http_port}"
    cid = f"trace-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as gw:
        # A tenant of its own: default limits, whatever earlier tests set elsewhere.
        tenant = await create_tenant(platform, "trace")
        login = await gw.post("/v1/auth/login", json=tenant.login_body())
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
        placed = await gw.post(
            "/v1/orders",
            json=market_order(f"trace-{uuid.uuid4().hex[:12]}", quantity="0.001"),
            headers={**auth, "X-Correlation-Id": cid},
        )
        assert placed.status_code == 200, placed.text

    def root() -> CollectedSpan | None:
        return next(
            (
                s
                for s in platform.traces.spans
                if s.service == "gateway" and s.attributes.get("trading.correlation_id") == cid
            ),
            None,
        )

    async def gateway_span() -> CollectedSpan | None:
        return root()

    http = await eventually(gateway_span, timeout=30, what="the gateway's span of the order")
    assert http.name == "POST /v1/orders" and http.kind == "server"
    assert http.attributes["http.route"] == "/v1/orders"

    async def reached_everywhere() -> set[str] | None:
        services = {s.service for s in platform.traces.trace(http.trace_id)}
        return services if services >= EXPECTED else None

    started = time.monotonic()
    try:
        await eventually(reached_everywhere, timeout=45, what="the order's trace in every service")
    finally:
        spans = platform.traces.trace(http.trace_id)
        print(f"\ntrace {http.trace_id} after {time.monotonic() - started:.1f}s:")
        for span in spans:
            print(f"  {span.service:13} {span.kind:9} {span.name}")
    kinds = {(s.service, s.kind) for s in spans}
    # The relay's publish and the consumers' handling are in the trace, not new roots.
    assert ("execution", "producer") in kinds
    assert {("portfolio", "consumer"), ("audit", "consumer"), ("notification", "consumer")} <= kinds
    roots = [s for s in spans if not s.parent_span_id]
    assert [s.service for s in roots] == ["gateway"], [(s.service, s.name) for s in roots]
