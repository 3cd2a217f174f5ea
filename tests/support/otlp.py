"""A trace collector for tests: a real OTLP/gRPC TraceService on a spare
loopback port that keeps what the platform's processes export (their
BatchSpanProcessor + OTLPSpanExporter, configured by
``telemetry.otlp_endpoint``), so a test can follow one request across
processes as an operator's backend would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

KINDS = {
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "producer",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "consumer",
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
}


@dataclass(frozen=True, slots=True)
class CollectedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, str]


class _TraceService(pb_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[CollectedSpan] = []

    async def Export(
        self, request: pb.ExportTraceServiceRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        CollectedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            kind=KINDS.get(span.kind, "unspecified"),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _text(a.value) for a in span.attributes},
                        )
                    )
        return pb.ExportTraceServiceResponse()


def _text(value: object) -> str:
    which = value.WhichOneof("value")  # type: ignore[attr-defined]
    return str(getattr(value, which)) if which else ""


@dataclass
class Collector:
    endpoint: str
    _service: _TraceService

    @property
    def spans(self) -> list[CollectedSpan]:
        return list(self._service.spans)

    def trace(self, trace_id: str) -> list[CollectedSpan]:
        return [s for s in self._service.spans if s.trace_id == trace_id]


@asynccontextmanager
async def otlp_collector() -> AsyncIterator[Collector]:
    service = _TraceService()
    server = grpc.aio.server()
    pb_grpc.add_TraceServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Collector(f"127.0.0.1:{port}", service)
    finally:
        await server.stop(grace=None)
