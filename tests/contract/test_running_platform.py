"""Contract tests against the running platform: every service declared in
proto/ runs and is registered, health and reflection answer, bad input is
rejected with field violations, unbuilt RPCs say so. (The Python client SDK
is driven through the public edge by tests/contract/test_python_sdk.py.)

Every gRPC port is mutual TLS and every call needs a context token
(docs/security.md): these tests dial as real principals with the session's
local PKI (tests.support.security), as the gateway for user calls and as the
operator for health and reflection."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from trading.analytics.v1 import analytics_service_pb2, analytics_service_pb2_grpc
from trading.execution.v1 import execution_service_pb2, execution_service_pb2_grpc
from trading.marketdata.v1 import marketdata_service_pb2, marketdata_service_pb2_grpc

from runtime import contracts
from runtime.config import SERVICE_NAMES, Settings
from runtime.errors import error_details
from runtime.grpc_server import ServiceRunner
from runtime.service import fill_unimplemented
from tests.contract.conftest import RunningPlatform
from tests.support.processes import pid_listening_on
from tests.support.security import as_user, secure_channel
from tools.supervisor import check_health, isolated_settings, run_platform, wait_serving

pytestmark = pytest.mark.integration
TENANT = "tenant-contract"


async def test_all_eleven_services_serving_within_60s(platform: RunningPlatform) -> None:
    assert platform.startup_s < 60
    statuses = await asyncio.gather(*(check_health(platform.settings, n) for n in SERVICE_NAMES))
    assert dict(zip(SERVICE_NAMES, statuses, strict=True)) == dict.fromkeys(SERVICE_NAMES, 1)
    print(f"platform SERVING after {platform.startup_s:.1f}s")


async def _served_services(settings: Settings, service: str) -> set[str]:
    # Reflection needs only a certificate of the platform (what grpcurl would use).
    address = settings.address_of(service)
    async with secure_channel(settings, address, service, principal="operator") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def one_request() -> Any:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for reply in stub.ServerReflectionInfo(one_request()):
            return {s.name for s in reply.list_services_response.service}
    return set()


async def test_every_declared_service_has_a_running_implementation(platform: RunningPlatform) -> None:
    served: dict[str, set[str]] = {}
    for name in SERVICE_NAMES:
        served[name] = await _served_services(platform.settings, name)
        assert "grpc.health.v1.Health" in served[name], name
    everything = set().union(*served.values())
    for service in contracts.services():
        assert service.full_name in everything, f"{service.full_name} is not served by any process"
        # ...and by the process named after its domain.
        domain = service.full_name.split(".")[1]
        assert service.full_name in served[domain]


async def test_message_failing_validation_is_rejected_with_field_violations(
    platform: RunningPlatform,
) -> None:
    settings = platform.settings
    async with secure_channel(settings, settings.address_of("execution"), "execution") as channel:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
        bad = execution_service_pb2.PlaceOrderRequest(client_order_id="bad id with spaces", symbol="btc usd")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(bad, metadata=as_user(settings, "execution", TENANT), timeout=2)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = set(details.violated_fields)
    assert {"client_order_id", "symbol", "side", "quantity"} <= fields, fields


async def test_unbuilt_rpc_answers_unimplemented_never_a_made_up_success(infra_settings: Settings) -> None:
    """An RPC a servicer does not implement answers UNIMPLEMENTED with reason
    NOT_BUILT_YET (runtime.service), whichever service it belongs to."""

    class NothingBuilt:
        pass

    service = contracts.default_pool().FindServiceByName("trading.analytics.v1.AnalyticsService")
    servicer = NothingBuilt()
    assert fill_unimplemented(servicer, service) == [m.name for m in service.methods]

    def register(server: grpc.aio.Server) -> list[str]:
        add: Any = analytics_service_pb2_grpc.add_AnalyticsServiceServicer_to_server  # takes any object
        add(servicer, server)
        return [service.full_name]

    runner = ServiceRunner("analytics", infra_settings, register, address="127.0.0.1:0", metrics_port=-1)
    await runner.start()
    try:
        address = f"127.0.0.1:{runner.port}"
        async with secure_channel(infra_settings, address, "analytics") as channel:
            stub = analytics_service_pb2_grpc.AnalyticsServiceStub(channel)
            request = analytics_service_pb2.GetTradeStatsRequest()
            request.time_range.start.seconds, request.time_range.end.seconds = 0, 60
            md = as_user(infra_settings, "analytics", TENANT)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetTradeStats(request, metadata=md, timeout=2)
    finally:
        await runner.stop()
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.UNIMPLEMENTED
    assert details.error_info is not None and details.error_info.reason == "NOT_BUILT_YET"


async def test_correlation_id_is_echoed(platform: RunningPlatform) -> None:
    settings = platform.settings
    async with secure_channel(settings, settings.address_of("marketdata"), "marketdata") as channel:
        stub = marketdata_service_pb2_grpc.MarketDataServiceStub(channel)
        call = stub.ListInstruments(
            marketdata_service_pb2.ListInstrumentsRequest(page_size=1),
            metadata=as_user(settings, "marketdata", TENANT, correlation_id="corr-123"),
            timeout=2,
        )
        await call
        sent_back = {**dict(await call.initial_metadata()), **dict(await call.trailing_metadata())}
    assert sent_back.get("x-correlation-id") == "corr-123"


async def test_gateway_liveness_and_readiness(platform: RunningPlatform) -> None:
    base = f"http://127.0.0.1:{platform.settings.gateway.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["services"].values()) == {"SERVING"}


async def test_stopping_the_platform_stops_every_process_cleanly(
    infra_settings: Settings, tmp_path: Path
) -> None:
    """What Ctrl-C does (SIGINT sets the supervisor's stop event): every
    service drains and exits, exit code 0, nothing answers afterwards."""
    settings = isolated_settings(infra_settings, tmp_path)
    names = ["marketdata", "execution", "gateway"]
    stop = asyncio.Event()
    task = asyncio.create_task(run_platform(settings, names, stop_event=stop, ready_timeout=60))
    assert await wait_serving(settings, names, timeout=60) == []
    stop.set()
    assert await asyncio.wait_for(task, 60) == 0
    statuses = await asyncio.gather(*(check_health(settings, n, timeout=0.3) for n in names))
    assert set(statuses) == {0}, "a service still answers after the platform stopped"


async def test_a_service_crashing_after_start_up_is_restarted_alone(
    infra_settings: Settings, tmp_path: Path
) -> None:
    """`./dev run` keeps the platform up when a service crashes: that service
    comes back (same port, SERVING again), the others never stopped."""
    settings = isolated_settings(infra_settings, tmp_path)
    names = ["risk", "features"]
    stop, up = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_platform(settings, names, stop_event=stop, ready_timeout=60, up_event=up))
    try:
        # Up as the supervisor sees it (a crash before that fails the start).
        await asyncio.wait_for(up.wait(), 90)
        risk = pid_listening_on(settings.address_of("risk"))
        features = pid_listening_on(settings.address_of("features"))
        os.kill(risk, signal.SIGKILL)
        await asyncio.sleep(0.3)
        assert not task.done(), "the platform stopped because one service crashed"
        assert await wait_serving(settings, ["risk"], timeout=60) == []
        restarted = pid_listening_on(settings.address_of("risk"))
        assert restarted != risk
        assert pid_listening_on(settings.address_of("features")) == features
        assert not task.done()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0
    statuses = await asyncio.gather(*(check_health(settings, n, timeout=0.3) for n in names))
    assert set(statuses) == {0}, "a service still answers after the platform stopped"
