"""Trace sampling: parent-based with a ratio for new traces, and a span that
ends in error is exported whatever the ratio said."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from runtime.config import TelemetrySettings
from runtime.telemetry import tracer_provider


def _exported(ratio: float) -> tuple[InMemorySpanExporter, list[str]]:
    exporter = InMemorySpanExporter()
    provider = tracer_provider(TelemetrySettings(trace_sample_ratio=ratio), "test", exporter)
    tracer = provider.get_tracer("test")
    for i in range(50):
        with tracer.start_as_current_span(f"request {i}"), tracer.start_as_current_span(f"call {i}"):
            pass
    with (
        tracer.start_as_current_span("failing request"),
        tracer.start_as_current_span("failing call") as call,
    ):
        call.set_status(Status(StatusCode.ERROR, "boom"))
    provider.force_flush()
    names = [s.name for s in exporter.get_finished_spans()]
    provider.shutdown()
    return exporter, names


def test_everything_is_exported_at_ratio_one() -> None:
    _, names = _exported(1.0)
    assert len(names) == 102


def test_at_ratio_zero_only_spans_that_failed_are_exported() -> None:
    _, names = _exported(0.0)
    assert names == ["failing call"]


def test_a_trace_is_kept_or_left_out_whole() -> None:
    _, names = _exported(0.5)
    kept = {n.split(" ")[1] for n in names if n.startswith("request ")}
    calls = {n.split(" ")[1] for n in names if n.startswith("call ")}
    assert kept == calls and 0 < len(kept) < 50  # children follow their parent's decision
