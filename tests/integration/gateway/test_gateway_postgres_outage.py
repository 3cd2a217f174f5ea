"""A PostgreSQL outage under a running service: calls fail with UNAVAILABLE
and RetryInfo, the gateway answers 503 problem+json with Retry-After, and
both succeed again once PostgreSQL is back, without restarting the service
(its asyncpg pool reconnects) or the gateway (its breaker probes).

The cluster is our own (started here on a spare port): stopping the
session's PostgreSQL would break every other test running on this machine.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from trading.audit.v1 import audit_service_pb2 as pb
from trading.audit.v1 import audit_service_pb2_grpc as pb_grpc

from gateway.problems import PROBLEM_CONTENT_TYPE, from_rpc_error
from runtime.config import Settings
from runtime.errors import DEPENDENCY_DOMAIN, DEPENDENCY_RETRY_AFTER_S, error_details
from services.audit.main import make_spec
from services.audit.settings import AuditSettings
from tests.support.security import service_channel, user_md
from tests.support.services import running_service
from tools.infra import ManagedProcess, ensure_database, free_port, start_postgres

pytestmark = pytest.mark.integration


@dataclass
class Outage:
    """Our own PostgreSQL (stop/start at will) and an audit service on it."""

    port: int
    data_dir: Path
    log_path: Path
    proc: ManagedProcess
    stub: pb_grpc.AuditServiceAsyncStub
    settings: Settings
    address: str

    async def stop_postgres(self) -> None:
        await asyncio.to_thread(self.proc.stop)

    async def start_postgres(self) -> None:
        self.proc = await asyncio.to_thread(
            start_postgres, self.port, self.data_dir, fast=True, log_path=self.log_path
        )


async def _start_cluster(root: Path) -> tuple[int, ManagedProcess]:
    for attempt in range(3):  # a spare port can be taken by a parallel run before the postmaster binds it
        port = free_port()
        try:
            proc = await asyncio.to_thread(
                start_postgres, port, root / "data", fast=True, log_path=root / "postgres.log"
            )
            return port, proc
        except (RuntimeError, TimeoutError):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def outage(infra_settings: Settings) -> AsyncIterator[Outage]:
    # Not under pytest's basetemp: every pytest session that starts on this
    # machine (other runs in parallel) chmods /tmp/pytest-of-<user> to 0700,
    # which locks out PostgreSQL's unprivileged user mid-test.
    with tempfile.TemporaryDirectory(prefix="pg-outage-") as tmp:
        async for harness in _outage(infra_settings, Path(tmp)):
            yield harness


async def _outage(infra_settings: Settings, root: Path) -> AsyncIterator[Outage]:
    port, proc = await _start_cluster(root)
    harness = Outage(port, root / "data", root / "postgres.log", proc, None, infra_settings, "")  # type: ignore[arg-type]
    try:
        settings = infra_settings.model_copy(
            update={
                "postgres": infra_settings.postgres.model_copy(
                    update={
                        "dsn": f"postgresql://postgres@127.0.0.1:{port}/trading",
                        "admin_dsn": f"postgresql://postgres@127.0.0.1:{port}/postgres",
                    }
                ),
            }
        )
        await ensure_database(settings.postgres.admin_dsn, "trading")
        spec = make_spec(AuditSettings(consumer_group=f"audit.outage-{uuid.uuid4().hex[:8]}"))
        async with running_service(spec, settings) as address, service_channel(address, "audit") as channel:
            harness.stub = pb_grpc.AuditServiceStub(channel)
            harness.address = address
            yield harness
    finally:
        await asyncio.to_thread(harness.proc.stop)


TENANT = f"t-{uuid.uuid4().hex[:10]}"


async def query(stub: pb_grpc.AuditServiceAsyncStub) -> pb.QueryEventsResponse:
    reply: pb.QueryEventsResponse = await stub.QueryEvents(
        pb.QueryEventsRequest(page_size=10), metadata=user_md("audit", TENANT), timeout=10
    )
    return reply


def assert_503_problem(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    # Whole seconds (RFC 9110), from the RetryInfo of the service or of the gateway's open breaker.
    assert int(response.headers["retry-after"]) >= 1
    doc = response.json()
    assert doc["code"] == "UNAVAILABLE" and doc["retryAfterSeconds"] > 0
    assert "127.0.0.1" not in doc["detail"]  # neither the database's nor a service's address
    assert str(response.headers["x-correlation-id"]) == doc["correlationId"]


async def test_outage_is_unavailable_with_retry_info_and_everything_heals(
    outage: Outage, redis_client: Redis, gateway: Any, make_api_key: Any
) -> None:
    async with (
        gateway(outage.settings, {"audit": outage.address}) as gw,
        make_api_key(redis_client, ["audit:read"], tenant=TENANT) as (secret, _),
    ):
        auth = {"X-Api-Key": secret}
        assert list((await query(outage.stub)).records) == []
        before = await gw.get("/v1/audit/events", params={"page_size": "5"}, headers=auth)
        assert before.status_code == 200, before.text

        await outage.stop_postgres()
        try:
            # Every call during the outage (the first ones meet the pooled
            # connections PostgreSQL closed, the later ones a refused connect).
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await query(outage.stub)
                err = caught.value
                assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
                details = error_details(err)
                assert details.retry_delay_s == DEPENDENCY_RETRY_AFTER_S
                assert details.error_info is not None
                assert details.error_info.domain == DEPENDENCY_DOMAIN
                assert details.error_info.reason in {
                    "DATABASE_CONNECTION_LOST",
                    "DATABASE_RESTARTING",
                    "DEPENDENCY_UNREACHABLE",
                }
                # No host or port of the database leaks into the message.
                assert str(outage.port) not in details.message

                # The gateway's mapping of exactly this error.
                response = from_rpc_error(err).response("cid-outage")
                assert response.status_code == 503
                assert response.headers["Retry-After"] == "1"
                doc = json.loads(bytes(response.body))
                assert (doc["code"], doc["domain"]) == ("UNAVAILABLE", DEPENDENCY_DOMAIN)

            # Through the real gateway: 503 + Retry-After (its breaker opens on
            # these answers, then answers the same way without calling audit).
            for _ in range(8):
                assert_503_problem(await gw.get("/v1/audit/events", params={"page_size": "5"}, headers=auth))
        finally:
            await outage.start_postgres()
        back = time.monotonic()

        # Back: the same service process answers again (its pool reconnects) ...
        failures = 0
        while True:
            try:
                reply = await query(outage.stub)
                break
            except grpc.aio.AioRpcError as err:
                assert err.code() is grpc.StatusCode.UNAVAILABLE
                failures += 1
                assert time.monotonic() - back < 15, "no successful call 15 s after PostgreSQL came back"
                await asyncio.sleep(0.05)
        assert list(reply.records) == []
        # The pool dropped its dead connections by itself: at most a stale one per pooled connection.
        assert failures <= 10
        for _ in range(5):
            await query(outage.stub)

        # ... and so does the gateway, within its breaker's short probe interval (not its 5 s cap).
        while True:
            answer = await gw.get("/v1/audit/events", params={"page_size": "5"}, headers=auth)
            if answer.status_code == 200:
                break
            assert_503_problem(answer)
            assert time.monotonic() - back < 15, "gateway still failing 15 s after PostgreSQL came back"
            await asyncio.sleep(0.05)
        recovered_s = time.monotonic() - back
        assert recovered_s < 4.0, recovered_s
