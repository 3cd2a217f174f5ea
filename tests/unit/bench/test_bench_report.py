"""Rendering of benchmark results: verdicts, floor multiples, the Markdown
table with explicit "not built yet" rows, JSON round trip and PNG plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness import NS_PER_MS, Recorder
from bench.model import Result, Run, Status, measured, not_built
from bench.report import (
    floor_multiple,
    fmt_ms,
    headline_table,
    read_json,
    render_markdown,
    verdict,
    write_report,
)
from bench.targets import BY_KEY, TARGETS


def recorder(*values_ms: float) -> Recorder:
    rec = Recorder()
    for v in values_ms:
        rec.record_ns(round(v * NS_PER_MS))
    return rec


def sample_run(mode: str = "full") -> Run:
    floor = measured("floor_grpc", "", "bare grpc", recorder(*[0.4] * 99, 0.5), method="closed loop")
    health = measured(
        "health_check", "health_check", "grpc.health Check", recorder(*[0.8] * 99, 1.0),
        method="closed loop", floor="floor_grpc", notes="a note",
    )  # fmt: skip
    slow = measured("cache_get", "cache", "Redis GET", recorder(*[0.2] * 98, 0.9, 0.9), method="closed loop")
    return Run(
        mode=mode,
        started_at="2026-01-01T00:00:00Z",
        duration_s=12.0,
        machine={
            "cpu_count": 2,
            "cpu_model": "test cpu",
            "python": "3.11",
            "git": {"commit": "abc", "dirty": False},
        },
        floors=[floor],
        paths=[
            not_built("order_placement", "order_placement", "PlaceOrder with risk", 3, "execution not built"),
            health,
            slow,
        ],
    )


def test_fmt_ms_keeps_useful_precision() -> None:
    assert fmt_ms(0.04123) == "0.0412"
    assert fmt_ms(0.4123) == "0.412"
    assert fmt_ms(4.123) == "4.12"
    assert fmt_ms(41.23) == "41.2"
    assert fmt_ms(412.3) == "412"
    assert fmt_ms(None) == "-"


def test_floor_multiple_divides_p50_and_p99() -> None:
    run = sample_run()
    health = run.paths[1]
    mult = floor_multiple(health, run.floor("floor_grpc"))
    assert mult is not None
    assert mult[0] == pytest.approx(2.0, rel=1e-2)
    assert mult[1] == pytest.approx(2.0, rel=1e-2)
    assert floor_multiple(health, None) is None


def test_verdicts_compare_p99_with_goal_and_adr() -> None:
    run = sample_run()
    _, health, cache = run.paths
    assert verdict(health, BY_KEY["health_check"], "full") == ("pass", "pass")  # p99 0.8 < 1 and < 5
    assert verdict(cache, BY_KEY["cache"], "full") == ("FAIL", "pass")  # p99 0.9: > 0.5 goal, < 1 ADR
    assert verdict(run.paths[0], BY_KEY["order_placement"], "full") == ("not built yet", "not built yet")
    assert verdict(health, BY_KEY["health_check"], "quick")[0] == "pass (quick: indicative)"
    broken = Result("x", "cache", "broken", Status.ERROR, error="boom")
    assert verdict(broken, BY_KEY["cache"], "full") == ("ERROR", "ERROR")


def test_headline_table_has_every_target_row() -> None:
    table = "\n".join(headline_table(sample_run()))
    for target in TARGETS:
        assert f"| {target.path} |" in table
    # Absent paths are listed, not silently dropped.
    assert "(no result)" in table


def test_markdown_report_shows_numbers_targets_and_not_built() -> None:
    md = render_markdown(sample_run(), {"health_check": "health_check.png"})
    row = next(line for line in md.splitlines() if line.startswith("| health check | grpc.health Check"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # path, what, p50, p95, p99, ADR, goal, x floor, goal verdict, ADR verdict
    assert cells[2:5] == ["0.800", "0.800", "0.800"]
    assert cells[5] == "< 5 ms" and cells[6] == "p99 < 1 ms"
    assert cells[7].startswith("2.0 / 2.0")
    assert cells[8:] == ["pass", "pass"]
    assert "not built yet (issue 3): PlaceOrder with risk" in md
    assert "| bare grpc | 0.400 |" in md
    assert "![health_check](health_check.png)" in md
    assert "a note" in md


def test_quick_mode_report_says_verdicts_are_indicative() -> None:
    md = render_markdown(sample_run("quick"))
    assert "indicative" in md
    assert "./dev bench --quick" in md


def test_write_report_writes_json_markdown_and_pngs(tmp_path: Path) -> None:
    run = sample_run()
    written = write_report(run, tmp_path)
    assert read_json(written["json"]).to_json() == run.to_json()
    assert written["markdown"].read_text().startswith("# Benchmark results: full mode")
    for key in ("floor_grpc", "health_check", "cache_get", "overview"):
        png = tmp_path / f"{key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
    assert not (tmp_path / "order_placement.png").exists()  # nothing to plot for an unbuilt path
