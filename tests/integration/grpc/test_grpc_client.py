"""The service-to-service client against real servers: propagation, deadlines,
safe retries, circuit breaking.

Every server is mutual TLS with the caller guard; clients dial services by
name as a principal (the gateway, or execution calling risk) and act for a
user through the request context (``kit.user``): their interceptor turns it
into a context token for the callee."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import grpc.aio
import pytest
from trading.common.v1 import decimal_pb2, market_pb2, types_pb2
from trading.execution.v1 import execution_service_pb2 as ex_pb
from trading.execution.v1 import execution_service_pb2_grpc as ex_grpc
from trading.execution.v1 import types_pb2 as ex_types
from trading.identity.v1 import identity_service_pb2 as id_pb
from trading.identity.v1 import identity_service_pb2_grpc as id_grpc
from trading.marketdata.v1 import marketdata_service_pb2 as md_pb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as md_grpc
from trading.risk.v1 import risk_service_pb2 as risk_pb
from trading.risk.v1 import risk_service_pb2_grpc as risk_grpc

from runtime.circuit_breaker import BreakerState
from runtime.context import current_context, new_correlation_id, use_context
from runtime.errors import CircuitOpenError, dependency_unavailable, domain_error, error_details, status
from runtime.grpc_client import idempotency_metadata
from runtime.health import probe
from tests.support.polling import eventually

TENANT = "0190b5d0-2222-7000-8000-000000000002"
IDENTITY = "trading.identity.v1.IdentityService"
UNAVAILABLE = status(grpc.StatusCode.UNAVAILABLE, "downstream overloaded")


def _place_order() -> ex_pb.PlaceOrderRequest:
    return ex_pb.PlaceOrderRequest(
        client_order_id="co-1",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        type=market_pb2.ORDER_TYPE_MARKET,
        time_in_force=ex_types.TIME_IN_FORCE_IOC,
        quantity=decimal_pb2.Decimal(value="0.01"),
    )


def _check_order() -> risk_pb.CheckOrderRequest:
    return risk_pb.CheckOrderRequest(
        client_order_id="co-1",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        quantity=decimal_pb2.Decimal(value="0.01"),
        order_type=market_pb2.ORDER_TYPE_MARKET,
    )


def _create_tenant() -> id_pb.CreateTenantRequest:
    return id_pb.CreateTenantRequest(
        slug="acme", display_name="Acme", admin_email="a@acme.test", admin_password="correct horse battery"
    )


async def test_tenant_and_correlation_id_propagate_through_a_chain(kit: Any) -> None:
    """gateway -> execution -> (execution's client) -> risk: risk sees the
    tenant, subject and correlation id the gateway sent execution, without
    execution forwarding anything by hand (its client chains the context
    token it received into one for risk)."""
    settings = kit.settings()
    back = kit.risk()
    front = kit.execution()
    async with (
        kit.server(back) as b_runner,
        kit.server(front) as a_runner,
        kit.clients(settings, principal="execution") as a_clients,
    ):
        kit.route(settings, a_runner, b_runner)
        b_stub = a_clients.stub(risk_grpc.RiskServiceStub, "risk")

        async def call_b(request: ex_pb.PlaceOrderRequest) -> None:
            await b_stub.CheckOrder(_check_order())

        front.downstream = call_b

        correlation = new_correlation_id()
        async with kit.clients(settings) as clients:
            a_stub = clients.stub(ex_grpc.ExecutionServiceStub, "execution")
            with use_context(kit.user(TENANT, subject="user-1", correlation_id=correlation)):
                call = a_stub.PlaceOrder(_place_order(), metadata=idempotency_metadata("idem-9"))
                await call
            assert (await call.trailing_metadata()).get("x-correlation-id") == correlation

    seen_a, seen_b = front.contexts[-1], back.contexts[-1]
    for seen in (seen_a, seen_b):
        assert (seen.tenant_id, seen.subject, seen.correlation_id) == (TENANT, "user-1", correlation)
    # Each hop knows who called it (from the caller's certificate).
    assert (seen_a.caller, seen_b.caller) == ("gateway", "execution")
    # The idempotency key belongs to the one call it was sent with.
    assert seen_a.idempotency_key == "idem-9" and seen_b.idempotency_key == ""


async def test_deadline_propagates_to_downstream_calls(kit: Any) -> None:
    settings = kit.settings(default_timeout_s=5.0)
    back = kit.risk()
    front = kit.execution()
    async with (
        kit.server(back) as b_runner,
        kit.server(front) as a_runner,
        kit.clients(settings, principal="execution") as a_clients,
        kit.clients(settings) as clients,
    ):
        kit.route(settings, a_runner, b_runner)
        b_stub = a_clients.stub(risk_grpc.RiskServiceStub, "risk")
        budgets: list[float | None] = []

        async def call_b(request: ex_pb.PlaceOrderRequest) -> None:
            budgets.append(current_context().time_remaining())
            await b_stub.CheckOrder(_check_order())  # default would be 5 s
            await b_stub.CheckOrder(_check_order(), timeout=30)  # an explicit longer one is capped too

        front.downstream = call_b
        a_stub = clients.stub(ex_grpc.ExecutionServiceStub, "execution")
        with use_context(kit.user(TENANT)):
            await a_stub.PlaceOrder(_place_order(), timeout=0.4)

            # Without a caller budget the default applies (the gateway calling risk directly).
            await clients.stub(risk_grpc.RiskServiceStub, "risk").CheckOrder(_check_order())

    # grpc-timeout travels rounded up (a few ms), hence the small slack; without
    # propagation B would see ~5 s and ~30 s.
    slack = 0.02
    a_budget = budgets[0]
    assert a_budget is not None and a_budget <= 0.4 + slack
    b_first, b_second, b_direct = back.remaining
    assert b_first is not None and b_second is not None and b_direct is not None
    assert 0 < b_first <= a_budget + slack and 0 < b_second <= a_budget + slack
    assert 4.0 < b_direct <= 5.05


async def test_expired_budget_fails_without_calling(kit: Any) -> None:
    servicer = kit.identity()
    settings = kit.settings()
    async with kit.server(servicer) as runner, kit.clients(settings) as clients:
        kit.route(settings, runner)
        stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
        with (
            use_context(kit.user(TENANT).with_deadline_in(0.0)),
            pytest.raises(grpc.aio.AioRpcError) as caught,
        ):
            await stub.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT))
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert servicer.calls["GetTenant"] == 0


async def test_a_retry_never_repeats_a_non_idempotent_call(kit: Any) -> None:
    servicer = kit.identity()
    # A high breaker threshold: this test is about retries, not about tripping.
    settings = kit.settings(max_attempts=3, breaker_failure_threshold=100)
    async with kit.server(servicer) as runner, kit.clients(settings) as clients:
        kit.route(settings, runner)
        stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
        with use_context(kit.user(TENANT)):
            # CreateTenant is not idempotent (contract): one UNAVAILABLE, one call, error surfaces.
            servicer.fail_next["CreateTenant"].append(UNAVAILABLE)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateTenant(_create_tenant())
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert servicer.calls["CreateTenant"] == 1

            # GetTenant is idempotent: two UNAVAILABLE, then success on the third attempt.
            servicer.fail_next["GetTenant"].extend([UNAVAILABLE, UNAVAILABLE])
            reply = await stub.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT))
            assert reply.tenant.tenant_id == TENANT
            assert servicer.calls["GetTenant"] == 3

            # Idempotent, but the error is not transient: not repeated.
            servicer.fail_next["GetTenant"].append(status(grpc.StatusCode.NOT_FOUND, "no such tenant"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert servicer.calls["GetTenant"] == 4

            # Retries stop at max_attempts.
            servicer.fail_next["GetTenant"].extend([UNAVAILABLE] * 5)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert servicer.calls["GetTenant"] == 7


async def test_open_breaker_fails_fast_and_recovers_after_cool_down(kit: Any) -> None:
    """The downstream answers UNAVAILABLE until it is fixed."""
    servicer = kit.identity()
    settings = kit.settings(max_attempts=1, breaker_failure_threshold=3, breaker_reset_timeout_s=0.3)
    async with kit.server(servicer) as runner, kit.clients(settings) as clients:
        kit.route(settings, runner)
        stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
        request = id_pb.GetTenantRequest(tenant_id=TENANT)
        with use_context(kit.user(TENANT)):
            # Bad requests do not count: the downstream answered.
            for _ in range(5):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetTenant(id_pb.GetTenantRequest(tenant_id="not-a-uuid"))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert clients.breaker("identity").state is BreakerState.CLOSED

            servicer.fail_next["GetTenant"].extend([UNAVAILABLE] * 3)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetTenant(request)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert clients.breaker("identity").state is BreakerState.OPEN
            assert servicer.calls["GetTenant"] == 3

            # Open: fails at once with UNAVAILABLE, the server never sees the call.
            start = time.perf_counter()
            with pytest.raises(CircuitOpenError) as fast:
                await stub.GetTenant(request)
            assert time.perf_counter() - start < 0.05
            assert fast.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_details(fast.value).retry_delay_s is not None
            assert servicer.calls["GetTenant"] == 3

            await asyncio.sleep(0.35)  # cool-down: the next call is the probe, and the server is fine now
            reply = await stub.GetTenant(request)
            assert reply.tenant.tenant_id == TENANT
            assert clients.breaker("identity").state is BreakerState.CLOSED
            assert servicer.calls["GetTenant"] == 4


async def test_a_deliberate_unavailable_answer_does_not_open_the_breaker(kit: Any) -> None:
    """UNAVAILABLE with an ErrorInfo reason ("no data for this symbol yet") is
    the downstream answering on purpose: one caller's requests must not open
    the breaker for every tenant."""
    servicer = kit.identity()
    settings = kit.settings(max_attempts=1, breaker_failure_threshold=2, breaker_reset_timeout_s=5)
    deliberate = domain_error(grpc.StatusCode.UNAVAILABLE, "NO_DATA_YET", "trading.test", "not yet")
    async with kit.server(servicer) as runner, kit.clients(settings) as clients:
        kit.route(settings, runner)
        stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
        servicer.fail_next["GetTenant"].extend([deliberate] * 4)
        with use_context(kit.user(TENANT)):
            for _ in range(4):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT))
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert clients.breaker("identity").state is BreakerState.CLOSED


async def test_a_database_outage_answer_opens_the_breaker(kit: Any) -> None:
    """UNAVAILABLE of a service whose database is down carries an ErrorInfo too,
    but of the dependency domain: it fails every caller, so it counts."""
    servicer = kit.identity()
    settings = kit.settings(max_attempts=1, breaker_failure_threshold=2, breaker_reset_timeout_s=5)
    outage = dependency_unavailable(ConnectionRefusedError(111, "Connect call failed"))
    assert outage is not None
    async with kit.server(servicer) as runner, kit.clients(settings) as clients:
        kit.route(settings, runner)
        stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
        servicer.fail_next["GetTenant"].extend([outage] * 2)
        with use_context(kit.user(TENANT)):
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT))
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert error_details(caught.value).retry_delay_s == 1.0
        assert clients.breaker("identity").state is BreakerState.OPEN


async def test_breaker_trips_on_a_stopped_server_and_recovers_after_restart(kit: Any) -> None:
    servicer = kit.identity()
    # A first open interval longer than the restart below takes, so the breaker is still open then.
    settings = kit.settings(
        max_attempts=1, breaker_failure_threshold=3, breaker_reset_timeout_s=0.3, breaker_open_initial_s=0.3
    )
    async with kit.clients(settings) as clients:
        with use_context(kit.user(TENANT)):
            async with kit.server(servicer) as runner:
                port = runner.port
                target = f"127.0.0.1:{port}"
                kit.route(settings, runner)
                stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
                request = id_pb.GetTenantRequest(tenant_id=TENANT)
                await stub.GetTenant(request)

            # The server is gone: connection failures trip the breaker.
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetTenant(request, timeout=0.5)
                assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert clients.breaker("identity").state is BreakerState.OPEN

            async with kit.server(servicer, address=target) as restarted:
                assert restarted.port == port
                # Still open: refused locally although the server is back.
                with pytest.raises(CircuitOpenError):
                    await stub.GetTenant(request)
                assert servicer.calls["GetTenant"] == 1

                await clients.channel("identity").channel_ready()  # reconnect (no RPC)
                await asyncio.sleep(0.35)
                reply = await stub.GetTenant(request)
                assert reply.tenant.tenant_id == TENANT
                assert clients.breaker("identity").state is BreakerState.CLOSED
                assert servicer.calls["GetTenant"] == 2


async def test_health_probes_neither_trip_nor_wait_for_the_breaker(kit: Any) -> None:
    """A health probe asks whether the target is up; its "no" is not a failed
    call. A process that probes a dependency while it starts (execution
    probes risk twice a second) must not find the breaker open when the
    dependency comes up, and a probe must get through an open breaker: it
    is how the caller learns the target is back."""
    servicer = kit.identity()
    settings = kit.settings(max_attempts=1, breaker_failure_threshold=2, breaker_reset_timeout_s=30)
    async with kit.clients(settings) as clients:
        async with kit.server(servicer) as runner:
            target = f"127.0.0.1:{runner.port}"
            kit.route(settings, runner)
        channel = clients.channel("identity")
        for _ in range(4):  # the server is not there: every probe fails
            assert not (await probe(channel, IDENTITY, timeout=0.3)).serving
        assert clients.breaker("identity").state is BreakerState.CLOSED

        clients.breaker("identity").record_failure()
        clients.breaker("identity").record_failure()
        assert clients.breaker("identity").state is BreakerState.OPEN
        async with kit.server(servicer, address=target):
            await eventually(lambda: _serving(channel), 5.0, "a probe through the open breaker")


async def _serving(channel: grpc.aio.Channel) -> bool:
    return (await probe(channel, IDENTITY, timeout=0.5)).serving


async def test_channels_are_pooled_per_target(kit: Any) -> None:
    settings = kit.settings()
    async with kit.server(kit.identity()) as runner, kit.clients(settings) as clients:
        kit.route(settings, runner)
        target = f"127.0.0.1:{runner.port}"
        assert clients.channel("identity") is clients.channel("identity")
        first = clients.stub(id_grpc.IdentityServiceStub, "identity")
        second = clients.stub(id_grpc.IdentityServiceStub, "identity")
        with use_context(kit.user(TENANT)):
            await asyncio.gather(
                first.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT)),
                second.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT)),
            )
        # Service names resolve through the settings (their defaults without an entry) ...
        assert clients.target_of("identity") == target
        assert clients.target_of("risk") == settings.address_of("risk")
        # ... and only service names: a bare address names neither the audience
        # of the context token nor the certificate the server must present.
        with pytest.raises(ValueError, match="dial services by name"):
            clients.target_of(target)


async def test_server_streams_carry_the_context_and_respect_the_breaker(kit: Any) -> None:
    servicer = kit.marketdata()
    settings = kit.settings(breaker_failure_threshold=1, breaker_reset_timeout_s=30)
    async with kit.server(servicer) as runner, kit.clients(settings) as clients:
        kit.route(settings, runner)
        stub = clients.stub(md_grpc.MarketDataServiceStub, "marketdata")
        request = md_pb.StreamQuotesRequest(symbols=["AAPL", "MSFT"])
        with use_context(kit.user(TENANT, correlation_id="corr-stream")):
            symbols = [r.quote.symbol async for r in stub.StreamQuotes(request)]
        assert symbols == ["AAPL", "MSFT"]
        seen = servicer.contexts[-1]
        assert (seen.tenant_id, seen.correlation_id) == (TENANT, "corr-stream")
        # Streams get no default deadline (they are long-lived) ...
        assert seen.deadline is None

        # ... and are refused while the target's breaker is open.
        breaker = clients.breaker("marketdata")
        breaker.record_failure()
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError), use_context(kit.user(TENANT)):
            _ = [r async for r in stub.StreamQuotes(request)]
        assert servicer.calls == 1
