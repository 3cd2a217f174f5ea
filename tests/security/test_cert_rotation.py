"""Certificates rotated on disk are picked up without a restart, on both sides."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from trading.marketdata.v1 import marketdata_service_pb2 as md_pb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as md_grpc

from runtime.config import SecuritySettings, Settings
from runtime.context import RequestContext
from runtime.contracts import METADATA, default_pool
from runtime.grpc_client import ClientFactory
from runtime.grpc_server import ServiceRunner
from runtime.security.credentials import credentials_for
from runtime.security.pki import ensure_pki, issue_certificate, load_ca, local_paths
from runtime.service import fill_unimplemented

pytestmark = pytest.mark.asyncio(loop_scope="session")


def served_certificate_serial(port: int, pki: Path) -> int:
    """The serial of the certificate the server presents to a new connection."""
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "gateway.crt", pki / "gateway.key")
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="marketdata") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_rotated_certificates_apply_to_new_connections_and_long_lived_stubs(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, security=SecuritySettings(cert_reload_s=0.05))
    pki = settings.security.pki_path(tmp_path)
    ensure_pki(pki, settings.security.trust_domain)
    runner = ServiceRunner("marketdata", settings, lambda server: [], address="127.0.0.1:0", metrics_port=-1)
    await runner.start()
    clients = ClientFactory(settings, principal="gateway", tracing=False)
    try:
        address = {"marketdata": f"127.0.0.1:{runner.port}"}
        clients._settings = settings.model_copy(update={"service_addresses": address})
        health = clients.stub(health_pb2_grpc.HealthStub, "marketdata")  # made once, like a service's stubs
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
        before = served_certificate_serial(runner.port, pki)

        ca = load_ca(pki)
        for principal in ("marketdata", "gateway"):
            issue_certificate(pki, principal, trust_domain=settings.security.trust_domain, ca=ca)
        await asyncio.sleep(0.2)

        after = served_certificate_serial(runner.port, pki)
        new_serial = x509.load_pem_x509_certificate(
            local_paths(pki, "marketdata").cert.read_bytes()
        ).serial_number
        assert after != before and after == new_serial
        # The stub made before the rotation still works, over a channel with the new client certificate.
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
        assert credentials_for(settings, "gateway").tls.generation >= 1
    finally:
        await clients.close()
        await runner.stop(grace=0)


class _NothingBuilt:
    pass


async def test_plaintext_switch_still_identifies_callers_by_their_signed_token(tmp_path: Path) -> None:
    """Development only: no TLS, but the caller check and the token still apply
    (the token's certificate stands in for the missing peer certificate)."""
    settings = Settings(var_dir=tmp_path, security=SecuritySettings(plaintext=True))
    ensure_pki(settings.security.pki_path(tmp_path), settings.security.trust_domain)
    service = default_pool().FindServiceByName("trading.marketdata.v1.MarketDataService")

    def register(server: grpc.aio.Server) -> list[str]:
        servicer = _NothingBuilt()
        fill_unimplemented(servicer, service)
        add: Any = md_grpc.add_MarketDataServiceServicer_to_server
        add(servicer, server)
        return [service.full_name]

    runner = ServiceRunner("marketdata", settings, register, address="127.0.0.1:0", metrics_port=-1)
    await runner.start()
    request = md_pb.GetInstrumentRequest(symbol="BTC-USD")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runner.port}") as channel:
            stub = md_grpc.MarketDataServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetInstrument(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            as_features = credentials_for(settings, "features").tokens.mint("marketdata", RequestContext())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetInstrument(
                    request, metadata=((METADATA.context_token, as_features),), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # features may not call it
            user = RequestContext(tenant_id="t1", subject="u", scopes=frozenset({"marketdata:read"}))
            as_gateway = credentials_for(settings, "gateway").tokens.mint("marketdata", user)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetInstrument(request, metadata=((METADATA.context_token, as_gateway),), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # admitted: reached the servicer
    finally:
        await runner.stop(grace=0)
