"""Logging and tracing set-up, done once per process.

Logs: the code logs through stdlib ``logging`` (cheap when a level is off,
which matters on the hot path) or ``structlog.get_logger()``; both are
rendered by structlog's ``ProcessorFormatter`` as JSON (``log_json``) or
key=value console lines, each carrying the service name and, inside a call,
the tenant and correlation id of the current :class:`RequestContext`, plus the
trace id when a span is active.

Traces: a ``TracerProvider`` with a ``service.name`` resource, exporting over
OTLP/gRPC only when ``telemetry.otlp_endpoint`` is set (otherwise spans still
propagate W3C trace context between services but are not exported).
Sampling is parent-based with a ratio for new traces
(``telemetry.trace_sample_ratio``); a trace the ratio leaves out is still
recorded, not exported, except its spans that end in error: those are
always exported (:class:`KeepErrorsSampler`, :class:`ErrorKeepingBatchProcessor`).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.util.types import Attributes

from runtime.config import TelemetrySettings
from runtime.context import current_context

_configured: Telemetry | None = None


def _add_request_context(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: tenant and correlation id of the current call."""
    ctx = current_context()
    if ctx.correlation_id:
        event.setdefault("correlation_id", ctx.correlation_id)
    if ctx.tenant_id:
        event.setdefault("tenant_id", ctx.tenant_id)
    span_ctx = trace.get_current_span().get_span_context()
    if span_ctx.is_valid:
        event.setdefault("trace_id", format(span_ctx.trace_id, "032x"))
    return event


def _add_service(service_name: str) -> structlog.types.Processor:
    def add(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("service", service_name)
        return event

    return add


def _shared_processors(service_name: str) -> list[structlog.types.Processor]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service_name),
        _add_request_context,
    ]


def log_formatter(settings: TelemetrySettings, service_name: str) -> logging.Formatter:
    """The formatter of every log line: JSON or key=value, with request context."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(service_name),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


class _DeferredRecords(logging.handlers.QueueHandler):
    """Hands records to the writer thread: a log call on the hot path costs a
    queue put, never a render or a blocking write to a full stderr pipe.

    What lives in context variables (the call's tenant, correlation id, trace
    id) is read here, in the caller, and travels on the record as attributes
    (structlog's ExtraAdder turns them into fields); the message is merged
    with its arguments now, while the arguments still hold their values."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if isinstance(record.msg, dict):  # from structlog: its processors already ran here
            return record
        ctx = current_context()
        if ctx.correlation_id and not hasattr(record, "correlation_id"):
            record.correlation_id = ctx.correlation_id
        if ctx.tenant_id and not hasattr(record, "tenant_id"):
            record.tenant_id = ctx.tenant_id
        span_ctx = trace.get_current_span().get_span_context()
        if span_ctx.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = format(span_ctx.trace_id, "032x")
        record.msg = record.getMessage()
        record.args = None
        return record


_listener: logging.handlers.QueueListener | None = None


def flush_logs() -> None:
    """Write out every record queued so far and end the writer thread (at
    exit; configure_logging starts a new one)."""
    global _listener
    if _listener is not None:
        _listener.stop()  # drains the queue, then ends the thread
        _listener = None


atexit.register(flush_logs)


def configure_logging(settings: TelemetrySettings, service_name: str) -> None:
    """Route stdlib logging and structlog through one formatter on stderr,
    rendered and written by a background thread (:class:`_DeferredRecords`)."""
    global _listener
    flush_logs()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(settings, service_name))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, handler, respect_handler_level=True)
    _listener.start()
    shared = _shared_processors(service_name)
    root = logging.getLogger()
    root.handlers[:] = [_DeferredRecords(records)]
    root.setLevel(settings.log_level.upper())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared[:2],
            *shared[3:],
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class KeepErrorsSampler(Sampler):
    """Parent-based ratio sampling that never drops a span outright: a span
    follows its parent's decision; a new trace is sampled with `ratio` (by
    trace id, so every process agrees). Spans left out are RECORD_ONLY
    (recorded, not exported), so one that ends in error can still be
    exported by :class:`ErrorKeepingBatchProcessor`."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        state: trace.TraceState | None = trace_state
        if parent.is_valid:
            sampled = parent.trace_flags.sampled
            state = parent.trace_state
        else:
            decision = self._ratio.should_sample(parent_context, trace_id, name).decision
            sampled = decision is Decision.RECORD_AND_SAMPLE
        decision = Decision.RECORD_AND_SAMPLE if sampled else Decision.RECORD_ONLY
        return SamplingResult(decision, attributes, state)

    def get_description(self) -> str:
        return f"KeepErrorsSampler{{{self._ratio.get_description()}}}"


class ErrorKeepingBatchProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that also exports unsampled spans ending in error."""

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and not span.context.trace_flags.sampled:
            if span.status.status_code is StatusCode.ERROR:
                # The SDK's processor drops unsampled spans before its queue;
                # this is that queue (pinned by tests/unit/runtime/test_tracing.py).
                self._batch_processor.emit(span)
            return
        super().on_end(span)


def configure_tracing(
    settings: TelemetrySettings, service_name: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install the global tracer provider (OTLP export only with an endpoint,
    or to `exporter`) and return it."""
    provider = tracer_provider(settings, service_name, exporter)
    trace.set_tracer_provider(provider)
    return provider


def tracer_provider(
    settings: TelemetrySettings, service_name: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    """The process' tracer provider, not installed (tests use it directly)."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=KeepErrorsSampler(settings.trace_sample_ratio),
    )
    if exporter is None and settings.otlp_endpoint:
        # Imported lazily: the exporter pulls in its own gRPC stack.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
    if exporter is not None:
        provider.add_span_processor(ErrorKeepingBatchProcessor(exporter))
    return provider


@dataclass
class Telemetry:
    """Handle of the process' telemetry; ``shutdown`` flushes pending spans."""

    service_name: str
    tracer_provider: TracerProvider

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()


def setup_telemetry(settings: TelemetrySettings, service_name: str) -> Telemetry:
    """Configure logging and tracing once per process (later calls return the first handle)."""
    global _configured
    if _configured is None:
        configure_logging(settings, service_name)
        _configured = Telemetry(service_name, configure_tracing(settings, service_name))
    return _configured
