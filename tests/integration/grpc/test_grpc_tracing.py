"""Traces cross service boundaries: the server span continues the client's trace."""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from trading.identity.v1 import identity_service_pb2 as id_pb
from trading.identity.v1 import identity_service_pb2_grpc as id_grpc

from runtime.context import use_context
from runtime.grpc_client import ClientFactory


async def test_server_span_is_a_child_of_the_client_span(kit: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with kit.server(kit.identity(), tracer_provider=provider) as runner:
        settings = kit.settings()
        kit.route(settings, runner)
        clients = ClientFactory(settings, tracer_provider=provider, principal="gateway")
        tenant = "0190b5d0-3333-7000-8000-000000000003"
        try:
            stub = clients.stub(id_grpc.IdentityServiceStub, "identity")
            with use_context(kit.user(tenant)):
                await stub.GetTenant(id_pb.GetTenantRequest(tenant_id=tenant))
        finally:
            await clients.close()

    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind is SpanKind.SERVER]
    client = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(server) == 1 and len(client) == 1
    assert server[0].name == client[0].name == "/trading.identity.v1.IdentityService/GetTenant"
    assert server[0].context.trace_id == client[0].context.trace_id
    assert server[0].parent is not None and server[0].parent.span_id == client[0].context.span_id


async def test_health_checks_make_no_spans(kit: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with kit.server(kit.identity(), tracer_provider=provider) as runner:
        await runner.wait_ready()
        settings = kit.settings()
        kit.route(settings, runner)
        async with kit.clients(settings) as clients:
            health = health_pb2_grpc.HealthStub(clients.channel("identity"))
            await health.Check(health_pb2.HealthCheckRequest())
    assert [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER] == []
