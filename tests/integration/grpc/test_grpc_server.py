"""The service gRPC server: health, reflection, validation, errors, context, shutdown.

Servers are mutual TLS with the caller guard; tests dial them with the
gateway's certificate (``kit.channel``) and act for a user with a context
token the gateway signed (``kit.user_md``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from trading.identity.v1 import identity_service_pb2 as id_pb
from trading.identity.v1 import identity_service_pb2_grpc as id_grpc
from trading.marketdata.v1 import marketdata_service_pb2 as md_pb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as md_grpc

from runtime.errors import domain_error, error_details

TENANT = "0190b5d0-1111-7000-8000-000000000001"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "grpc_server_handled_total",
        {"service": "trading.identity.v1.IdentityService", "method": method, "code": code},
    )
    return value or 0.0


async def _handled_becomes(method: str, code: str, expected: float) -> float:
    """The server records a call just after its status went out (an abort sends
    the status at once), so the client may look a moment too early."""
    for _ in range(100):
        if _handled(method, code) >= expected:
            break
        await asyncio.sleep(0.01)
    return _handled(method, code)


def _trailer(md: grpc.aio.Metadata | None, key: str) -> str | bytes | None:
    for k, v in md or ():
        if k == key:
            return v
    return None


async def test_health_turns_serving_when_ready_check_passes(kit: Any) -> None:
    ready = False

    async def ready_check() -> bool:
        return ready

    async with (
        kit.server(kit.identity(), ready_check=ready_check) as runner,
        kit.channel(runner) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=kit.IDENTITY))
        for name in ("", kit.IDENTITY):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == NOT_SERVING, name
        assert (await watch.read()).status == NOT_SERVING

        ready = True
        async with asyncio.timeout(5):
            await runner.wait_ready()
        for name in ("", kit.IDENTITY):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == SERVING, name
        # Watch (a handler that writes with context.write) streams through the interceptors.
        assert (await watch.read()).status == SERVING

        # Dependencies going away flip health back.
        ready = False
        async with asyncio.timeout(5):
            assert (await watch.read()).status == NOT_SERVING
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == NOT_SERVING
        watch.cancel()


async def test_ready_check_that_raises_stops_the_server(kit: Any) -> None:
    async def broken() -> bool:
        raise RuntimeError("migrations failed")

    async with kit.server(kit.identity(), ready_check=broken) as runner:
        async with asyncio.timeout(5):
            await runner.wait_stopped()
        assert isinstance(runner.failure, RuntimeError)


async def test_reflection_lists_the_services(kit: Any) -> None:
    async with (
        kit.server(kit.identity(), kit.marketdata()) as runner,
        kit.channel(runner) as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        replies = [reply async for reply in call]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {
            kit.IDENTITY,
            kit.MARKETDATA,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names

        # The descriptors are served too (what grpcurl and friends need).
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=kit.IDENTITY)])
        )
        replies = [reply async for reply in call]
        assert replies[0].file_descriptor_response.file_descriptor_proto


async def test_bad_request_gets_invalid_argument_with_field_violations(kit: Any) -> None:
    servicer = kit.identity()
    async with (
        kit.server(servicer) as runner,
        kit.channel(runner) as channel,
    ):
        stub = id_grpc.IdentityServiceStub(channel)
        before = _handled("CreateApiKey", "INVALID_ARGUMENT")
        bad = id_pb.CreateApiKeyRequest(name="", scopes=["orders:read", "NOT A SCOPE"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateApiKey(bad, metadata=kit.user_md(runner, TENANT, correlation_id="corr-bad-1"))
        err = caught.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = error_details(err)
        assert details.violated_fields == ["name", "scopes[1]"]
        assert [v.reason for v in details.field_violations] == ["string.min_len", "string.pattern"]
        assert all(v.description for v in details.field_violations)
        # The correlation id is echoed even on errors, and the servicer never ran.
        assert _trailer(err.trailing_metadata(), "x-correlation-id") == "corr-bad-1"
        assert servicer.calls["CreateApiKey"] == 0
        # Metrics and logs see the real final code.
        assert await _handled_becomes("CreateApiKey", "INVALID_ARGUMENT", before + 1) == before + 1


async def test_streaming_request_is_validated_and_correlation_id_comes_first(kit: Any) -> None:
    servicer = kit.marketdata()
    async with (
        kit.server(servicer) as runner,
        kit.channel(runner) as channel,
    ):
        stub = md_grpc.MarketDataServiceStub(channel)
        call = stub.StreamQuotes(
            md_pb.StreamQuotesRequest(symbols=["BTC-USD", "ETH-USD"]),
            metadata=kit.user_md(runner, TENANT, correlation_id="c-42"),
        )
        assert _trailer(await call.initial_metadata(), "x-correlation-id") == "c-42"
        assert [r.quote.symbol async for r in call] == ["BTC-USD", "ETH-USD"]

        bad = stub.StreamQuotes(
            md_pb.StreamQuotesRequest(symbols=["btc usd"]), metadata=kit.user_md(runner, TENANT)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = [r async for r in bad]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(caught.value).violated_fields == ["symbols[0]"]
        assert servicer.calls == 1


async def test_servicer_errors_carry_error_info_and_missing_tenant_is_unauthenticated(kit: Any) -> None:
    servicer = kit.identity()
    servicer.fail_next["GetTenant"].append(
        domain_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            "TENANT_SUSPENDED",
            "trading.identity",
            "tenant is suspended",
            {"tenant_id": TENANT},
            retry_after_s=1.5,
        )
    )
    async with (
        kit.server(servicer) as runner,
        kit.channel(runner) as channel,
    ):
        stub = id_grpc.IdentityServiceStub(channel)
        before = _handled("GetTenant", "FAILED_PRECONDITION")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTenant(
                id_pb.GetTenantRequest(tenant_id=TENANT), metadata=kit.user_md(runner, TENANT)
            )
        assert await _handled_becomes("GetTenant", "FAILED_PRECONDITION", before + 1) == before + 1
        details = error_details(caught.value)
        assert details.code == grpc.StatusCode.FAILED_PRECONDITION
        assert details.message == "tenant is suspended"
        assert details.error_info is not None
        assert (details.error_info.reason, details.error_info.domain) == (
            "TENANT_SUSPENDED",
            "trading.identity",
        )
        assert details.error_info.metadata["tenant_id"] == TENANT
        assert details.retry_delay_s == pytest.approx(1.5)
        # A generated correlation id is echoed when the caller sent none.
        assert _trailer(caught.value.trailing_metadata(), "x-correlation-id")

        ok = id_pb.CreateApiKeyRequest(name="ci", scopes=["orders:read"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateApiKey(ok)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reason = error_details(caught.value).error_info
        assert reason is not None and reason.reason == "CONTEXT_TOKEN_MISSING"
        # A bare tenant header is no tenant context (only a context token is).
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateApiKey(ok, metadata=(("x-tenant-id", TENANT),))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert servicer.calls["CreateApiKey"] == 0
        reply = await stub.CreateApiKey(ok, metadata=kit.user_md(runner, TENANT))
        assert reply.secret == "s3cret"


async def test_server_reads_the_request_context_from_the_context_token(kit: Any) -> None:
    servicer = kit.identity()
    async with (
        kit.server(servicer) as runner,
        kit.channel(runner) as channel,
    ):
        stub = id_grpc.IdentityServiceStub(channel)
        token = kit.user_md(
            runner, TENANT, subject="user-7", scopes={"identity:read", "admin"}, roles={"admin"}
        )
        call = stub.GetTenant(
            id_pb.GetTenantRequest(tenant_id=TENANT),
            timeout=1.0,
            metadata=(
                *token,
                ("x-correlation-id", "corr-ctx-1"),
                ("idempotency-key", "idem-1"),
                # Bare context headers beside the token are never read.
                ("x-tenant-id", "someone-else"),
                ("x-subject", "intruder"),
                ("x-scopes", "risk:admin"),
                ("x-roles", "root"),
            ),
        )
        await call
        assert _trailer(await call.trailing_metadata(), "x-correlation-id") == "corr-ctx-1"
        ctx = servicer.contexts[-1]
        assert (ctx.tenant_id, ctx.subject, ctx.correlation_id, ctx.idempotency_key) == (
            TENANT,
            "user-7",
            "corr-ctx-1",
            "idem-1",
        )
        assert ctx.scopes == {"identity:read", "admin"}
        assert ctx.roles == {"admin"}
        assert ctx.caller == "gateway"  # from the client certificate
        remaining = servicer.remaining[-1]
        assert remaining is not None and 0.5 < remaining <= 1.05

        # A malformed correlation id (spaces, too long, odd characters) is replaced by a fresh one.
        call = stub.GetTenant(
            id_pb.GetTenantRequest(tenant_id=TENANT),
            metadata=(*kit.user_md(runner, TENANT), ("x-correlation-id", "a b;c")),
        )
        await call
        echoed = _trailer(await call.trailing_metadata(), "x-correlation-id")
        assert echoed and echoed != "a b;c" and servicer.contexts[-1].correlation_id == echoed
        assert servicer.remaining[-1] is None  # no deadline sent


async def test_graceful_shutdown_lets_an_in_flight_call_finish(kit: Any) -> None:
    servicer = kit.identity()
    servicer.jwks_release.clear()
    cleaned: list[str] = []

    async def cleanup() -> None:
        cleaned.append("closed")

    async with kit.server(servicer) as runner:
        runner.add_cleanup(cleanup)
        channel = kit.channel(runner)
        stub = id_grpc.IdentityServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await runner.wait_ready()
        in_flight = asyncio.ensure_future(stub.GetJwks(id_pb.GetJwksRequest(), timeout=5))
        await servicer.jwks_started.wait()

        stopping = asyncio.ensure_future(runner.stop(grace=3.0))
        await asyncio.sleep(0.1)
        # Health went NOT_SERVING first; new calls are refused while the old one runs.
        assert runner.health._server_status[""] == NOT_SERVING
        assert not in_flight.done() and not stopping.done()
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert cleaned == []  # resources stay open while a call still runs

        servicer.jwks_release.set()
        reply = await in_flight
        assert isinstance(reply, id_pb.GetJwksResponse)
        await stopping
        assert cleaned == ["closed"]
        await channel.close()


async def test_metrics_endpoint_exposes_handling_histogram(kit: Any) -> None:
    async with kit.server(kit.identity(), metrics_port=0) as runner:
        async with kit.channel(runner) as channel:
            await id_grpc.IdentityServiceStub(channel).GetTenant(
                id_pb.GetTenantRequest(tenant_id=TENANT), metadata=kit.user_md(runner, TENANT)
            )
        assert runner.metrics_port
        start = time.monotonic()
        async with httpx.AsyncClient(trust_env=False) as http:
            text = (await http.get(f"http://127.0.0.1:{runner.metrics_port}/metrics")).text
        assert time.monotonic() - start < 2
        line = (
            'grpc_server_handling_seconds_bucket{code="OK",le="0.001",method="GetTenant",'
            'service="trading.identity.v1.IdentityService"}'
        )
        assert line in text
        assert 'grpc_server_handled_total{code="OK",method="GetTenant"' in text
