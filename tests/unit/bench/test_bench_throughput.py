"""The tick-throughput row: when a step counts as keeping up, the rate
verdict against the brief's ticks/s goal, and its table and plot."""

from __future__ import annotations

from pathlib import Path

from bench.harness import NS_PER_MS, Recorder
from bench.hotpaths import judge
from bench.model import Run, measured
from bench.report import render_markdown, verdict, write_report
from bench.targets import BY_KEY


def _rec(*values_ms: float) -> Recorder:
    rec = Recorder()
    for v in values_ms:
        rec.record_ns(round(v * NS_PER_MS))
    return rec


def test_a_step_keeps_up_only_when_features_consumes_what_marketdata_published() -> None:
    assert judge(2000, 1990, 1985, 12.0) == (True, "kept up")
    kept, why = judge(2000, 1500, 1500, 12.0)
    assert not kept and "marketdata published" in why
    kept, why = judge(2000, 2000, 1300, 12.0)
    assert not kept and "features consumed" in why
    kept, why = judge(2000, 2000, 1999, 900.0)
    assert not kept and "backlog" in why
    assert not judge(2000, 2000, 1999, None)[0]


def _throughput_run(sustained: int) -> Run:
    steps = [
        {"rate_per_s": 1000, "marketdata_per_s": 1001.0, "features_per_s": 1000.0, "latency_p50_ms": 2.0,
         "latency_p99_ms": 9.0, "latency_samples": 500, "kept_up": True, "why": "kept up"},
        {"rate_per_s": 2000, "marketdata_per_s": 2002.0, "features_per_s": 1400.0, "latency_p50_ms": 900.0,
         "latency_p99_ms": 2000.0, "latency_samples": 500, "kept_up": False,
         "why": "features consumed 1,400/s of 2,002/s published"},
    ]  # fmt: skip
    row = measured(
        "tick_throughput", "tick_throughput", f"highest sustained: {sustained:,} ticks/s", _rec(2.0, 9.0),
        method="stepped", extra={"sustained_rate_per_s": sustained, "steps": steps},
    )  # fmt: skip
    return Run("full", "2026-01-01T00:00:00Z", 1.0, {"git": {}}, [], [row])


def test_throughput_is_judged_by_its_rate_not_by_a_latency_bound() -> None:
    target = BY_KEY["tick_throughput"]
    assert verdict(_throughput_run(1000).paths[0], target, "full") == ("FAIL", "pass")
    assert verdict(_throughput_run(25_000).paths[0], target, "full") == ("pass", "pass")
    assert verdict(_throughput_run(10).paths[0], target, "quick") == (
        "FAIL (quick: indicative)",
        "FAIL (quick: indicative)",
    )


def test_throughput_steps_get_a_table_and_a_throughput_vs_latency_plot(tmp_path: Path) -> None:
    run = _throughput_run(1000)
    written = write_report(run, tmp_path)
    png = written["tick_throughput_vs_latency"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = render_markdown(run, {"tick_throughput_vs_latency": png.name})
    assert "| 2,000 | 2,002 | 1,400 |" in text and "no: features consumed" in text
    assert "tick_throughput_vs_latency.png" in text
