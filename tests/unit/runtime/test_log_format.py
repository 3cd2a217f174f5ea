"""Every log line carries the service and the current call's tenant and correlation id."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from runtime.config import TelemetrySettings
from runtime.context import RequestContext, use_context
from runtime.telemetry import configure_logging, flush_logs, log_formatter


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("runtime.grpc.server", logging.WARNING, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_request_context_and_extra_fields() -> None:
    formatter = log_formatter(TelemetrySettings(log_json=True), "risk")
    with use_context(RequestContext(tenant_id="t-1", correlation_id="corr-1")):
        line = formatter.format(_record("rpc failed", code="UNAVAILABLE", duration_ms=1.5))
    event = json.loads(line)
    assert event["event"] == "rpc failed"
    assert event["level"] == "warning"
    assert event["service"] == "risk"
    assert (event["tenant_id"], event["correlation_id"]) == ("t-1", "corr-1")
    assert (event["code"], event["duration_ms"]) == ("UNAVAILABLE", 1.5)
    assert "timestamp" in event


def test_lines_outside_a_call_have_no_request_fields() -> None:
    formatter = log_formatter(TelemetrySettings(log_json=False), "risk")
    line = formatter.format(_record("started"))
    assert "started" in line and "correlation_id" not in line and "risk" in line


def test_records_are_rendered_off_the_callers_thread_with_the_callers_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The writer thread has no request context of its own: the tenant,
    # correlation id and trace id must be taken in the caller, and the message
    # merged with its arguments before they change.
    configure_logging(TelemetrySettings(log_json=True), "execution")
    try:
        tracer = TracerProvider().get_tracer("test")
        args = ["v1"]
        with (
            use_context(RequestContext(tenant_id="t-9", correlation_id="c-9")),
            tracer.start_as_current_span("call") as span,
        ):
            logging.getLogger("execution.orders").info("order %s accepted", args, extra={"step": 2})
            trace_id = format(span.get_span_context().trace_id, "032x")
        args.append("changed later")
        logging.getLogger("x").error("failed", exc_info=ValueError("boom"))
        with use_context(RequestContext(tenant_id="t-8")):
            structlog.get_logger("y").info("structured", size=3)
        flush_logs()
    finally:
        logging.getLogger().handlers[:] = []
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    first, second, third = lines
    assert first["event"] == "order ['v1'] accepted"
    assert (first["tenant_id"], first["correlation_id"], first["trace_id"]) == ("t-9", "c-9", trace_id)
    assert (first["service"], first["step"]) == ("execution", 2)
    assert "tenant_id" not in second and "ValueError: boom" in second["exception"]
    assert (third["event"], third["size"], third["tenant_id"]) == ("structured", 3, "t-8")
