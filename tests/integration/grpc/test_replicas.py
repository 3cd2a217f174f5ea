"""Client-side load balancing over a service's replicas, against real servers:
round_robin spreads calls, a replica that reports NOT_SERVING or dies stops
getting calls within a second, and a call that failed on one replica is
repeated on another when repeating is safe (idempotent, or carrying an
idempotency key)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from trading.identity.v1 import identity_service_pb2 as id_pb
from trading.identity.v1 import identity_service_pb2_grpc as id_grpc

from runtime.context import use_context
from runtime.errors import status
from runtime.grpc_client import idempotency_metadata
from runtime.health import HealthMonitor
from tests.support.polling import eventually
from tools.supervisor import health_probe

TENANT = "0190b5d0-2222-7000-8000-000000000007"
UNAVAILABLE = status(grpc.StatusCode.UNAVAILABLE, "replica going away")


def _switch() -> tuple[dict[str, bool], Callable[[], Any]]:
    """A readiness flag and the ready check reading it."""
    state = {"ready": True}

    async def ready() -> bool:
        return state["ready"]

    return state, ready


async def _calls_per_replica(stub: Any, servicers: list[Any], n: int) -> list[int]:
    before = [s.calls["GetTenant"] for s in servicers]
    for _ in range(n):
        await stub.GetTenant(id_pb.GetTenantRequest(tenant_id=TENANT))
    return [s.calls["GetTenant"] - b for s, b in zip(servicers, before, strict=True)]


async def _until_only(stub: Any, servicers: list[Any], survivor: int, timeout: float = 5.0) -> float:
    """Seconds until ten calls in a row reach only ``survivor``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        counts = await _calls_per_replica(stub, servicers, 10)
        if counts[survivor] == 10:
            return time.monotonic() - began
        await asyncio.sleep(0.02)
    raise AssertionError(f"calls still reach other replicas after {timeout}s")


async def test_calls_skip_a_replica_still_starting_then_spread_over_both(kit: Any) -> None:
    a, b = kit.identity(), kit.identity()
    a_state, a_ready = _switch()
    a_state["ready"] = False  # replica a is starting: its dependencies are not ready yet
    settings = kit.settings()
    async with kit.server(a, ready_check=a_ready) as ra, kit.server(b) as rb:
        settings.service_addresses["identity"] = f"127.0.0.1:{ra.port},127.0.0.1:{rb.port}"
        async with kit.clients(settings) as clients:
            stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
            with use_context(kit.user(TENANT)):
                await _until_only(stub, [a, b], survivor=1)
                assert await _calls_per_replica(stub, [a, b], 20) == [0, 20]

                a_state["ready"] = True  # ready: it takes calls, round_robin alternates
                await _until_both(stub, [a, b])
                counts = await _calls_per_replica(stub, [a, b], 20)
                assert min(counts) >= 8, counts

                # Taking calls is not withdrawn when a dependency goes away
                # later: its calls answer for themselves (UNAVAILABLE where they
                # need it), better than leaving no replica to answer.
                a_state["ready"] = False
                await asyncio.sleep(0.2)
                assert min(await _calls_per_replica(stub, [a, b], 20)) >= 8


async def test_a_replica_shutting_down_is_out_of_rotation_at_once(kit: Any) -> None:
    a, b = kit.identity(), kit.identity()
    settings = kit.settings()
    async with kit.server(a) as ra, kit.server(b) as rb:
        settings.service_addresses["identity"] = f"127.0.0.1:{ra.port},127.0.0.1:{rb.port}"
        async with kit.clients(settings) as clients:
            stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
            with use_context(kit.user(TENANT)):
                await _until_both(stub, [a, b])
                # What a SIGTERM does first: health NOT_SERVING, then a grace
                # period for the calls in flight.
                await ra.health.enter_graceful_shutdown()
                took = await _until_only(stub, [a, b], survivor=1)
                print(f"\nreplica shutting down out of rotation after {took * 1000:.0f} ms")
                assert took < 1.0


async def test_a_replica_with_stuck_background_work_keeps_taking_calls(kit: Any) -> None:
    """A stuck consumer turns a replica's whole health NOT_SERVING (operators
    see it), but its RPCs still work, so balancing keeps it in the rotation."""
    a, b = kit.identity(), kit.identity()
    monitor = HealthMonitor()  # replica a's own: other tests' components do not count
    settings = kit.settings()
    quick = kit.settings()
    quick.health.stuck_after_s = 0.05
    async with kit.server(a, monitor=monitor, settings=quick) as ra, kit.server(b) as rb:
        settings.service_addresses["identity"] = f"127.0.0.1:{ra.port},127.0.0.1:{rb.port}"
        async with kit.clients(settings) as clients:
            stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
            with use_context(kit.user(TENANT)):
                await _until_both(stub, [a, b])
                monitor.register("kafka:replica-test").failing("broker down")

                async def stuck() -> bool:
                    return (
                        await health_probe(settings, "identity", f"127.0.0.1:{ra.port}")
                    ).status == "NOT_SERVING"

                await eventually(stuck, 5.0, "replica a NOT_SERVING")
                counts = await _calls_per_replica(stub, [a, b], 20)
                assert min(counts) >= 8, counts


async def _until_both(stub: Any, servicers: list[Any], timeout: float = 5.0) -> None:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if min(await _calls_per_replica(stub, servicers, 10)) > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("calls do not reach every replica")


async def test_a_replica_that_stops_is_left_out_without_failed_calls(kit: Any) -> None:
    a, b = kit.identity(), kit.identity()
    settings = kit.settings()
    async with kit.server(b) as rb, kit.clients(settings) as clients:
        async with kit.server(a) as ra:
            settings.service_addresses["identity"] = f"127.0.0.1:{ra.port},127.0.0.1:{rb.port}"
            stub = clients.stub(id_grpc.IdentityServiceStub, "identity")  # the channel dials both
            with use_context(kit.user(TENANT)):
                await _until_both(stub, [a, b])
        # Replica a is gone (its server stopped); every call still succeeds.
        with use_context(kit.user(TENANT)):
            began = time.monotonic()
            counts = await _calls_per_replica(stub, [a, b], 30)
            assert counts == [0, 30]
            assert time.monotonic() - began < 1.0


@pytest.mark.parametrize("keyed", [True, False])
async def test_a_keyed_call_failed_by_one_replica_is_repeated_on_another(kit: Any, keyed: bool) -> None:
    a, b = kit.identity(), kit.identity()
    settings = kit.settings(breaker_failure_threshold=100)
    async with kit.server(a) as ra, kit.server(b) as rb:
        settings.service_addresses["identity"] = f"127.0.0.1:{ra.port},127.0.0.1:{rb.port}"
        async with kit.clients(settings) as clients:
            stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
            with use_context(kit.user(TENANT)):
                await _until_both(stub, [a, b])
                # Both replicas refuse the next CreateTenant once, as a
                # replica that is shutting down would.
                a.fail_next["CreateTenant"].append(UNAVAILABLE)
                b.fail_next["CreateTenant"].append(UNAVAILABLE)
                request = id_pb.CreateTenantRequest(
                    slug="replica-test",
                    display_name="Replica test",
                    admin_email="a@replica.test",
                    admin_password="correct horse battery",
                )
                metadata = idempotency_metadata("create-replica-test") if keyed else ()
                if keyed:
                    await stub.CreateTenant(request, metadata=metadata)
                    # First attempt on one replica, the repeat on the other, and
                    # (both having failed once) the third attempt succeeds.
                    assert a.calls["CreateTenant"] + b.calls["CreateTenant"] == 3
                    assert a.calls["CreateTenant"] >= 1 and b.calls["CreateTenant"] >= 1
                else:
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stub.CreateTenant(request)
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert a.calls["CreateTenant"] + b.calls["CreateTenant"] == 1
