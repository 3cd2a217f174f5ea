"""Attacks on the internal gRPC ports, against real servers with real mutual TLS.

Each attack is what someone on the internal network (or holding one
service's credentials) would try; each must be refused with the right status
and change nothing stored. The walk at the end calls every RPC of every
service as every principal and checks the contract's caller lists hold.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import grpc.aio
import jwt
import pytest
import pytest_asyncio
from trading.common.v1 import decimal_pb2, market_pb2, types_pb2
from trading.execution.v1 import execution_service_pb2 as exec_pb
from trading.execution.v1 import execution_service_pb2_grpc as exec_grpc
from trading.execution.v1 import types_pb2 as exec_types
from trading.identity.v1 import identity_service_pb2 as id_pb
from trading.identity.v1 import identity_service_pb2_grpc as id_grpc

from runtime.config import Settings
from runtime.context import RequestContext
from runtime.contracts import METADATA, default_pool, method_policy, services
from runtime.errors import error_details
from runtime.grpc_server import ServiceRunner
from runtime.security.credentials import credentials_for
from runtime.security.pki import create_ca, issue_certificate
from runtime.security.principals import PRINCIPALS
from runtime.security.tls import target_name_option
from runtime.service import fill_unimplemented
from services.execution.main import SPEC as EXECUTION
from services.identity.main import SPEC as IDENTITY
from tests.support.security import as_user, secure_channel
from tests.support.services import running_service

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = METADATA.context_token


def code_and_reason(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    details = error_details(err)
    reason = details.error_info.reason if details.error_info is not None else ""
    return err.code(), reason


def order_request(client_order_id: str) -> exec_pb.PlaceOrderRequest:
    return exec_pb.PlaceOrderRequest(
        client_order_id=client_order_id,
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        type=market_pb2.ORDER_TYPE_MARKET,
        time_in_force=exec_types.TIME_IN_FORCE_IOC,
        quantity=decimal_pb2.Decimal(value="0.01"),
    )


async def orders_of(pg_pool: asyncpg.Pool, tenant: str) -> int:
    count: int = await pg_pool.fetchval("SELECT count(*) FROM execution.orders WHERE tenant_id = $1", tenant)
    return count


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def execution(infra_settings: Settings) -> AsyncIterator[str]:
    async with running_service(EXECUTION, infra_settings) as address:
        yield address


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def identity(infra_settings: Settings) -> AsyncIterator[str]:
    async with running_service(IDENTITY, infra_settings) as address:
        yield address


# ---- forged metadata -----------------------------------------------------------------------------


async def test_place_order_for_another_tenant_with_forged_metadata_is_refused(
    infra_settings: Settings, execution: str, pg_pool: asyncpg.Pool
) -> None:
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    forged = ((METADATA.tenant_id, victim), (METADATA.subject, "attacker"), (METADATA.scopes, "orders:write"))
    async with secure_channel(infra_settings, execution, "execution") as channel:
        stub = exec_grpc.ExecutionServiceStub(channel)
        # Bare metadata alone: no context token, no tenant.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(order_request("forged-1"), metadata=forged, timeout=5)
        assert code_and_reason(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_TOKEN_MISSING")
        # A valid token for the attacker's own tenant plus forged bare metadata:
        # the token wins; the bare x-tenant-id is never read.
        attacker = f"attacker-{uuid.uuid4().hex[:8]}"
        md = as_user(infra_settings, "execution", attacker, scopes={"orders:read"}) + forged
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(order_request("forged-2"), metadata=md, timeout=5)
        assert code_and_reason(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    assert await orders_of(pg_pool, victim) == 0
    assert await orders_of(pg_pool, attacker) == 0


async def test_create_tenant_with_a_forged_admin_scope_is_refused(
    infra_settings: Settings, identity: str, pg_pool: asyncpg.Pool
) -> None:
    before = await pg_pool.fetchval("SELECT count(*) FROM identity.tenants")
    slug = f"forged-{uuid.uuid4().hex[:8]}"
    request = id_pb.CreateTenantRequest(
        slug=slug,
        display_name="Forged",
        admin_email="a@forged.example",
        admin_password="correct horse battery",
    )
    platform = await pg_pool.fetchval("SELECT tenant_id FROM identity.tenants WHERE is_platform")
    forged = (
        (METADATA.tenant_id, platform),
        (METADATA.scopes, "admin identity:write"),
        (METADATA.roles, "ADMIN"),
    )
    async with secure_channel(infra_settings, identity, "identity") as channel:
        stub = id_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTenant(request, metadata=forged, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A real token of an ordinary trader of some tenant, forged scopes beside it.
        md = (
            as_user(infra_settings, "identity", "some-tenant", scopes={"orders:read"}, roles={"TRADER"})
            + forged
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTenant(request, metadata=md, timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await pg_pool.fetchval("SELECT count(*) FROM identity.tenants") == before
    assert await pg_pool.fetchval("SELECT count(*) FROM identity.tenants WHERE slug = $1", slug) == 0


# ---- transport --------------------------------------------------------------------------------


async def test_plaintext_connection_to_an_internal_port_is_refused(execution: str) -> None:
    async with grpc.aio.insecure_channel(execution) as channel:
        stub = exec_grpc.ExecutionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(exec_pb.GetOrderRequest(order_id="x"), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_certificate_from_a_foreign_ca_is_refused(
    infra_settings: Settings, execution: str, tmp_path: Path
) -> None:
    # The attacker runs their own CA and issues themselves a "gateway" certificate.
    ca = create_ca(tmp_path, name="attacker CA")
    paths = issue_certificate(tmp_path, "gateway", trust_domain=infra_settings.security.trust_domain, ca=ca)
    ours = credentials_for(infra_settings, "gateway").tls.paths.ca.read_bytes()
    creds = grpc.ssl_channel_credentials(ours, paths.key.read_bytes(), paths.cert.read_bytes())
    async with grpc.aio.secure_channel(
        execution, creds, options=[target_name_option("execution")]
    ) as channel:
        stub = exec_grpc.ExecutionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(exec_pb.GetOrderRequest(order_id="x"), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_no_client_certificate_is_refused(infra_settings: Settings, execution: str) -> None:
    ours = credentials_for(infra_settings, "gateway").tls.paths.ca.read_bytes()
    async with grpc.aio.secure_channel(
        execution, grpc.ssl_channel_credentials(ours), options=[target_name_option("execution")]
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await exec_grpc.ExecutionServiceStub(channel).GetOrder(
                exec_pb.GetOrderRequest(order_id="x"), timeout=3
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_valid_service_certificate_calling_an_rpc_it_may_not_call_is_refused(
    infra_settings: Settings, execution: str, pg_pool: asyncpg.Pool
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    # features is a real principal with a valid certificate, but PlaceOrder lists gateway and decision.
    async with secure_channel(infra_settings, execution, "execution", principal="features") as channel:
        stub = exec_grpc.ExecutionServiceStub(channel)
        md = (
            (TOKEN, credentials_for(infra_settings, "features").tokens.mint("execution", RequestContext())),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(order_request("features-1"), metadata=md, timeout=5)
    assert code_and_reason(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert await orders_of(pg_pool, tenant) == 0


# ---- tokens -----------------------------------------------------------------------------------


def _forge_token(settings: Settings, principal: str, claims: dict[str, Any]) -> str:
    """A token signed with ``principal``'s real key (what a holder of that key could make)."""
    tokens = credentials_for(settings, principal).tokens
    return tokens._sign(claims, "trading-ctx+jwt")


async def test_expired_token_is_refused(infra_settings: Settings, execution: str) -> None:
    now = int(time.time())
    token = _forge_token(
        infra_settings, "gateway",
        {"iss": "gateway", "aud": "execution", "iat": now - 600, "exp": now - 300, "ten": "t1", "sub": "u",
         "scp": "orders:read", "rol": "", "grt": "edge"},
    )  # fmt: skip
    async with secure_channel(infra_settings, execution, "execution") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await exec_grpc.ExecutionServiceStub(channel).GetOrder(
                exec_pb.GetOrderRequest(order_id="x"), metadata=((TOKEN, token),), timeout=3
            )
    assert code_and_reason(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_TOKEN_EXPIRED")


async def test_token_for_another_audience_is_refused(infra_settings: Settings, execution: str) -> None:
    # A genuine gateway token, made for portfolio, presented to execution by the gateway itself.
    md = as_user(infra_settings, "portfolio", "t1")
    async with secure_channel(infra_settings, execution, "execution") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await exec_grpc.ExecutionServiceStub(channel).GetOrder(
                exec_pb.GetOrderRequest(order_id="x"), metadata=md, timeout=3
            )
    assert code_and_reason(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_TOKEN_WRONG_AUDIENCE")


async def test_token_replayed_by_a_different_service_is_refused(
    infra_settings: Settings, execution: str, pg_pool: asyncpg.Pool
) -> None:
    # decision may call PlaceOrder; it steals a token the gateway made for execution and replays it.
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    stolen = as_user(infra_settings, "execution", tenant)
    async with secure_channel(infra_settings, execution, "execution", principal="decision") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await exec_grpc.ExecutionServiceStub(channel).PlaceOrder(
                order_request("replayed-1"), metadata=stolen, timeout=5
            )
    assert code_and_reason(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_TOKEN_ISSUER_NOT_PEER")
    assert await orders_of(pg_pool, tenant) == 0


async def test_a_service_cannot_make_itself_a_tenant_context(
    infra_settings: Settings, execution: str, pg_pool: asyncpg.Pool
) -> None:
    """decision may call PlaceOrder, but only under a delegation from identity:
    a tenant context it signs on its own authority is refused."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    token = _forge_token(
        infra_settings, "decision",
        {"iss": "decision", "aud": "execution", "iat": now, "exp": now + 60, "ten": tenant, "sub": "x",
         "scp": "orders:write", "rol": "", "grt": "edge"},
    )  # fmt: skip
    async with secure_channel(infra_settings, execution, "execution", principal="decision") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await exec_grpc.ExecutionServiceStub(channel).PlaceOrder(
                order_request("self-made-1"), metadata=((TOKEN, token),), timeout=5
            )
    assert code_and_reason(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_TOKEN_NOT_EDGE")
    assert await orders_of(pg_pool, tenant) == 0


async def test_delegations_are_issued_only_to_their_holder_and_for_existing_tenants(
    infra_settings: Settings, identity: str, pg_pool: asyncpg.Pool
) -> None:
    platform = await pg_pool.fetchval("SELECT tenant_id FROM identity.tenants WHERE is_platform")
    as_svc = ((TOKEN, credentials_for(infra_settings, "audit").tokens.mint("identity", RequestContext())),)
    async with secure_channel(infra_settings, identity, "identity", principal="audit") as channel:
        stub = id_grpc.IdentityServiceStub(channel)
        # audit asks for decision's purpose.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.IssueDelegation(
                id_pb.IssueDelegationRequest(tenant_id=platform, purpose="strategy-orders"),
                metadata=as_svc,
                timeout=5,
            )
        assert code_and_reason(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "DELEGATION_NOT_ALLOWED")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.IssueDelegation(
                id_pb.IssueDelegationRequest(tenant_id=platform, purpose="everything"),
                metadata=as_svc,
                timeout=5,
            )
        assert code_and_reason(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_PURPOSE")
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # protovalidate: a tenant id that is no id
            await stub.IssueDelegation(
                id_pb.IssueDelegationRequest(tenant_id="a.b", purpose="audit-replay"),
                metadata=as_svc,
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.IssueDelegation(
                id_pb.IssueDelegationRequest(tenant_id="no-such-tenant", purpose="audit-replay"),
                metadata=as_svc,
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        reply = await stub.IssueDelegation(
            id_pb.IssueDelegationRequest(tenant_id=platform, purpose="audit-replay"),
            metadata=as_svc,
            timeout=5,
        )
    assert set(reply.audiences) == {"execution", "portfolio"}
    claims = jwt.decode(reply.delegation, options={"verify_signature": False})
    assert claims["sub"] == "audit" and claims["ten"] == platform and claims["iss"] == "identity"
    # The gateway may not ask at all (callers: decision, audit).
    async with secure_channel(infra_settings, identity, "identity") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await id_grpc.IdentityServiceStub(channel).IssueDelegation(
                id_pb.IssueDelegationRequest(tenant_id=platform, purpose="audit-replay"),
                metadata=(
                    (
                        TOKEN,
                        credentials_for(infra_settings, "gateway").tokens.mint("identity", RequestContext()),
                    ),
                ),
                timeout=5,
            )
        assert code_and_reason(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


# ---- the walk ---------------------------------------------------------------------------------


class _NothingBuilt:
    pass


async def test_every_rpc_of_every_service_admits_exactly_its_contract_callers(
    infra_settings: Settings,
) -> None:
    """Every RPC x every principal, over real mTLS: the principals the contract
    lists get past the caller check (to validation or the servicer); every
    other principal gets PERMISSION_DENIED / CALLER_NOT_ALLOWED."""
    pool = default_pool()
    by_domain: dict[str, list[Any]] = {}
    for svc in services():
        by_domain.setdefault(svc.full_name.split(".")[1], []).append(svc)
    runners: list[ServiceRunner] = []
    checked = 0
    try:
        for domain, descriptors in by_domain.items():

            def register(server: grpc.aio.Server, descriptors: list[Any] = descriptors) -> list[str]:
                for svc in descriptors:
                    servicer = _NothingBuilt()
                    fill_unimplemented(servicer, svc)
                    module = __import__(
                        svc.file.name.replace("/", ".").removesuffix(".proto") + "_pb2_grpc", fromlist=["x"]
                    )
                    getattr(module, f"add_{svc.name}Servicer_to_server")(servicer, server)
                return [svc.full_name for svc in descriptors]

            runner = ServiceRunner(domain, infra_settings, register, address="127.0.0.1:0", metrics_port=-1)
            await runner.start()
            runners.append(runner)
            address = f"127.0.0.1:{runner.port}"
            for principal in PRINCIPALS:
                creds = credentials_for(infra_settings, principal)
                md = ((TOKEN, creds.tokens.mint(domain, RequestContext())),)
                async with creds.channel(address, domain, [], []) as channel:
                    for svc in descriptors:
                        for method in svc.methods:
                            path = f"/{svc.full_name}/{method.name}"
                            request_cls = pool.FindMessageTypeByName(method.input_type.full_name)
                            from google.protobuf import message_factory

                            request = message_factory.GetMessageClass(request_cls)()
                            code, reason = await _call(channel, path, method, request, md)
                            allowed = principal in method_policy(path).callers
                            refused = (code, reason) == (
                                grpc.StatusCode.PERMISSION_DENIED,
                                "CALLER_NOT_ALLOWED",
                            )
                            assert refused != allowed, (path, principal, code, reason)
                            checked += 1
    finally:
        for runner in runners:
            await runner.stop(grace=0)
    assert checked == len(PRINCIPALS) * sum(len(s.methods) for s in services())


async def _call(
    channel: grpc.aio.Channel, path: str, method: Any, request: Any, md: Any
) -> tuple[grpc.StatusCode, str]:
    serialize = type(request).SerializeToString
    if method.server_streaming:
        call = channel.unary_stream(path, request_serializer=serialize, response_deserializer=lambda b: b)(
            request, metadata=md, timeout=5
        )
        try:
            async for _ in call:
                break
            return grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as err:
            return code_and_reason(err)
    try:
        await channel.unary_unary(path, request_serializer=serialize, response_deserializer=lambda b: b)(
            request, metadata=md, timeout=5
        )
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as err:
        return code_and_reason(err)
