"""Every log line carries the service and the current call's tenant and correlation id."""

from __future__ import annotations

import json
import logging

from runtime.config import TelemetrySettings
from runtime.context import RequestContext, use_context
from runtime.telemetry import log_formatter


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
