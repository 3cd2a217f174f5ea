"""Writing a run down: results.json (everything, histograms included),
report.md (per path: p50/p95/p99, ADR target, project goal, floor multiple,
verdict or "not built yet") and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.harness import NS_PER_MS, decode_histogram
from bench.model import Result, Run, Status
from bench.targets import BY_KEY, TARGETS, Target

NOT_BUILT = "not built yet"


# ------------------------------------------------------------------------------ numbers


def fmt_ms(value: float | None) -> str:
    """Milliseconds with precision that fits their size (0.0412, 0.412, 4.12, 41.2, 412)."""
    if value is None:
        return "-"
    if value < 0.1:
        return f"{value:.4f}"
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def floor_multiple(result: Result, floor: Result | None) -> tuple[float, float] | None:
    """(p50 / floor p50, p99 / floor p99), or None without a floor."""
    if floor is None or not result.has_numbers or not floor.has_numbers:
        return None
    f50, f99 = floor.latency_ms["p50"], floor.latency_ms["p99"]
    if f50 <= 0 or f99 <= 0:
        return None
    return result.latency_ms["p50"] / f50, result.latency_ms["p99"] / f99


def verdict(result: Result, target: Target | None, mode: str) -> tuple[str, str]:
    """(against the project goal, against the ADR target), from the measured p99."""
    if result.status is Status.NOT_BUILT:
        return NOT_BUILT, NOT_BUILT
    if result.status is Status.ERROR or not result.has_numbers:
        return "ERROR", "ERROR"
    if target is None:
        return "-", "-"
    p99 = result.latency_ms["p99"]
    suffix = " (quick: indicative)" if mode == "quick" else ""
    rate = result.extra.get("sustained_rate_per_s")
    if rate is not None and (target.goal_rate_per_s is not None or target.adr_rate_per_s is not None):

        def judge_rate(floor: float | None) -> str:
            if floor is None:
                return "-"
            return ("pass" if rate >= floor else "FAIL") + suffix

        return judge_rate(target.goal_rate_per_s), judge_rate(target.adr_rate_per_s)

    def judge(limit: float | None, value: float = p99) -> str:
        if limit is None:
            return "-"
        return ("pass" if value < limit else "FAIL") + suffix

    # A goal may bound the server's handling time and the client's round trip differently.
    if result.extra.get("server_side") and target.goal_server_p99_ms is not None:
        return judge(target.goal_server_p99_ms), judge(target.adr_p99_ms)
    if not result.extra.get("server_side") and target.goal_round_trip_p50_ms is not None:
        return judge(target.goal_round_trip_p50_ms, result.latency_ms["p50"]), judge(target.adr_p99_ms)
    return judge(target.goal_p99_ms), judge(target.adr_p99_ms)


# ------------------------------------------------------------------------------ JSON


def write_json(run: Run, path: Path) -> None:
    path.write_text(json.dumps(run.to_json(), indent=1, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Run:
    return Run.from_json(json.loads(path.read_text(encoding="utf-8")))


# ------------------------------------------------------------------------------ Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _extra_text(extra: dict[str, Any]) -> str:
    parts = []
    for key, value in extra.items():
        if isinstance(value, list):
            continue  # tables of their own (throughput steps)
        if isinstance(value, dict):
            if {"p50", "p99"} <= value.keys():
                value = f"p50 {fmt_ms(value['p50'])} ms, p99 {fmt_ms(value['p99'])} ms"
            elif value and all(isinstance(v, int | float) for v in value.values()):
                value = ", ".join(f"{k}: {v:g}" for k, v in value.items())  # e.g. calls per bucket
            else:
                continue
        parts.append(f"{key}: {value}")
    return "; ".join(parts)


def headline_table(run: Run) -> list[str]:
    """The table the README quotes: one line per measured variant or unbuilt path."""
    lines = [
        "| path | what was measured | p50 ms | p95 ms | p99 ms | ADR target | project goal "
        "| x floor (p50 / p99) | goal | ADR |",
        "|---|---|---:|---:|---:|---|---|---|---|---|",
    ]
    by_target: dict[str, list[Result]] = {}
    orphans: list[Result] = []
    for r in run.paths:
        (by_target.setdefault(r.target, []) if r.target in BY_KEY else orphans).append(r)
    for target in TARGETS:
        rows = by_target.get(target.key)
        if not rows:
            lines.append(
                f"| {target.path} | (no result) | - | - | - | {target.adr} | {target.goal} | - | - | - |"
            )
            continue
        for r in rows:
            goal_v, adr_v = verdict(r, target, run.mode)
            if r.status is Status.NOT_BUILT:
                issue = f" (issue {r.issue})" if r.issue else ""
                lines.append(
                    f"| {_cell(target.path)} | {NOT_BUILT}{issue}: {_cell(r.name)} | - | - | - "
                    f"| {target.adr} | {_cell(target.goal)} | - | {NOT_BUILT} | {NOT_BUILT} |"
                )
                continue
            mult = floor_multiple(r, run.floor(r.floor))
            mult_text = f"{mult[0]:.1f} / {mult[1]:.1f} ({_floor_name(r.floor)})" if mult else "-"
            lat = r.latency_ms
            lines.append(
                f"| {_cell(target.path)} | {_cell(r.name)} | {fmt_ms(lat.get('p50'))} "
                f"| {fmt_ms(lat.get('p95'))} | {fmt_ms(lat.get('p99'))} | {target.adr} "
                f"| {_cell(target.goal)} | {mult_text} | {goal_v} | {adr_v} |"
            )
    for r in orphans:
        lines.append(f"| {_cell(r.name)} | ERROR: {_cell(r.error)} | - | - | - | - | - | - | ERROR | ERROR |")
    return lines


def _order_steps_table(steps: list[dict[str, Any]]) -> list[str]:
    """The steps of an order throughput search (bench.orders.RateStep)."""
    lines = [
        "| rate asked /s | completed /s | sent | failed | p50 ms | p99 ms | sender late p99 ms "
        "| server-side p50 ms | server-side p99 ms | kept up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for st in steps:
        lines.append(
            f"| {st['rate_per_s']:,.0f} | {st['achieved_per_s']:,.0f} | {st['sent']:,} | {st['failed']:,} "
            f"| {fmt_ms(st['latency_p50_ms'])} | {fmt_ms(st['latency_p99_ms'])} "
            f"| {fmt_ms(st['sender_late_p99_ms'])} | {fmt_ms(st['server_p50_ms'])} "
            f"| {fmt_ms(st['server_p99_ms'])} | {'yes' if st['kept_up'] else 'no: ' + _cell(st['why'])} |"
        )
    return lines


def _floor_name(key: str | None) -> str:
    return {"floor_tcp": "TCP", "floor_grpc": "gRPC", "floor_nats": "NATS"}.get(key or "", key or "-")


def render_markdown(run: Run, plots: dict[str, str] | None = None) -> str:
    plots = plots or {}
    m = run.machine
    git = m.get("git", {})
    lines = [
        f"# Benchmark results: {run.mode} mode",
        "",
        f"Run {run.started_at}, {run.duration_s:.0f} s, commit `{git.get('commit', '?')[:12]}`"
        f"{' (uncommitted changes)' if git.get('dirty') else ''}; {m.get('cpu_count', '?')} cores "
        f"({m.get('cpu_model', '?')}), Python {m.get('python', '?')}; load average at start "
        f"{m.get('load_average_start', '?')}, at end {m.get('load_average_end', '?')}.",
        f"Reproduce: `./dev bench --{run.mode}` (or `.venv/bin/python -m bench --{run.mode}`).",
        "",
    ]
    if run.mode == "quick":
        lines += [
            "Quick mode: a few hundred samples per path and 200,000 ClickHouse ticks. It proves every path "
            "produces numbers; its verdicts are indicative only (a p99 needs thousands of samples).",
            "",
        ]
    lines += [
        "## Paths against the targets",
        "",
        "Latencies in milliseconds. Verdicts compare the measured p99 with the project goal and with the "
        "ADR target. 'x floor' divides the path's p50 and p99 by those of its floor (below), measured in "
        "the same run.",
        "",
        *headline_table(run),
        "",
        "## Floors",
        "",
        "| floor | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | samples |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in run.floors:
        if f.has_numbers:
            lat = f.latency_ms
            lines.append(
                f"| {_cell(f.name)} | {fmt_ms(lat['p50'])} | {fmt_ms(lat['p95'])} | {fmt_ms(lat['p99'])} "
                f"| {fmt_ms(lat['p99_9'])} | {fmt_ms(lat['max'])} | {int(lat['count']):,} |"
            )
        else:
            lines.append(f"| {_cell(f.name)} | ERROR: {_cell(f.error)} | | | | | |")
    lines += ["", "## Details", ""]
    for r in [*run.floors, *run.paths]:
        lines.append(f"### {r.name}")
        lines.append("")
        if r.status is Status.NOT_BUILT:
            lines.append(f"**{NOT_BUILT}**" + (f" (issue {r.issue})" if r.issue else "") + f". {r.notes}")
        elif r.status is Status.ERROR:
            lines.append(f"**ERROR**: {r.error}")
        else:
            lat = r.latency_ms
            lines.append(
                f"- {int(lat['count']):,} samples, {r.method}; took {r.duration_s:.1f} s"
                if r.duration_s
                else f"- {int(lat['count']):,} samples, {r.method}"
            )
            lines.append(
                f"- min {fmt_ms(lat['min'])}, mean {fmt_ms(lat['mean'])}, p50 {fmt_ms(lat['p50'])}, "
                f"p90 {fmt_ms(lat['p90'])}, p95 {fmt_ms(lat['p95'])}, p99 {fmt_ms(lat['p99'])}, "
                f"p99.9 {fmt_ms(lat['p99_9'])}, max {fmt_ms(lat['max'])} ms"
            )
            if r.notes:
                lines.append(f"- {r.notes}")
            extra = _extra_text(r.extra)
            if extra:
                lines.append(f"- {extra}")
            steps = r.extra.get("steps")
            if steps and "achieved_per_s" in steps[0]:
                lines += ["", *_order_steps_table(steps), ""]
            elif steps:
                lines += [
                    "",
                    "| feed rate asked | marketdata ticks/s | features ticks/s | tick -> vector p50 ms "
                    "| p99 ms | kept up |",
                    "|---:|---:|---:|---:|---:|---|",
                ]
                for st in steps:
                    lines.append(
                        f"| {st['rate_per_s']:,.0f} | {st['marketdata_per_s']:,.0f} "
                        f"| {st['features_per_s']:,.0f} "
                        f"| {fmt_ms(st['latency_p50_ms'])} | {fmt_ms(st['latency_p99_ms'])} "
                        f"| {'yes' if st['kept_up'] else 'no: ' + _cell(st['why'])} |"
                    )
                lines.append("")
            for key in (r.key, f"{r.key}_vs_latency"):
                if key in plots:
                    lines.append(f"- ![{key}]({plots[key]})")
        lines.append("")
    lines += ["## Machine and versions", ""]
    for key, value in m.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"- {key}: {value}")
    lines.append("")
    if "overview" in plots:
        lines += ["## Overview", "", f"![overview]({plots['overview']})", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ plots


def _recorded_values(result: Result) -> tuple[list[float], list[int]]:
    """(value ms, count) of every recorded histogram bucket."""
    hist = decode_histogram(result.histogram)
    values, counts = [], []
    for item in hist.get_recorded_iterator():
        values.append(item.value_iterated_to / NS_PER_MS)
        counts.append(int(item.count_at_value_iterated_to))
    return values, counts


def plot_result(result: Result, target: Target | None, path: Path) -> None:
    """Latency distribution: histogram (log-spaced bins) and percentile spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values, counts = _recorded_values(result)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    lo, hi = max(min(values), 1e-4), max(values)
    bins = np.logspace(np.log10(lo * 0.9), np.log10(hi * 1.1), 60)
    left.hist(values, bins=bins, weights=counts, color="#3b75af")
    left.set_xscale("log")
    left.set_xlabel("latency (ms, log scale)")
    left.set_ylabel("samples")
    left.set_title("distribution")

    spectrum = [(p, v) for p, v in result.spectrum if p < 100.0]
    xs = [1.0 / (1.0 - p / 100.0) for p, _ in spectrum]
    right.plot(xs, [v for _, v in spectrum], marker="o", color="#3b75af", label="measured")
    right.set_xscale("log")
    ticks = [(50.0, "50%"), (90.0, "90%"), (99.0, "99%"), (99.9, "99.9%"), (99.99, "99.99%")]
    right.set_xticks([1.0 / (1.0 - p / 100.0) for p, _ in ticks], [label for _, label in ticks])
    right.set_xlabel("percentile")
    right.set_ylabel("latency (ms)")
    right.set_title("percentile spectrum")
    if target is not None and target.goal_p99_ms is not None:
        right.axhline(
            target.goal_p99_ms, color="#2a9d3f", linestyle="--", label=f"goal p99 {target.goal_p99_ms} ms"
        )
    if target is not None and target.adr_p99_ms is not None and target.adr_p99_ms != target.goal_p99_ms:
        ymax = max(v for _, v in spectrum) if spectrum else 0.0
        if target.adr_p99_ms <= ymax * 3:
            right.axhline(
                target.adr_p99_ms, color="#c0392b", linestyle=":", label=f"ADR {target.adr_p99_ms} ms"
            )
    right.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{result.name}\n{int(result.latency_ms['count']):,} samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_overview(run: Run, path: Path) -> None:
    """p50 and p99 of every measured path (log scale) with its goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in [*run.floors, *run.paths] if r.has_numbers]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r.latency_ms["p99"] for r in rows], color="#9dc3e6", label="p99")
    ax.barh(ys, [r.latency_ms["p50"] for r in rows], color="#3b75af", label="p50")
    for y, r in zip(ys, rows, strict=True):
        target = BY_KEY.get(r.target)
        if target is not None and target.goal_p99_ms is not None:
            ax.plot([target.goal_p99_ms] * 2, [y - 0.4, y + 0.4], color="#2a9d3f", linewidth=2)
    ax.plot([], [], color="#2a9d3f", linewidth=2, label="project goal (p99)")
    ax.set_yticks(ys, [r.key for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_title(f"p50 / p99 per path ({run.mode} mode)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_throughput(result: Result, target: Target | None, path: Path) -> None:
    """Achieved rate vs latency per step: ticks through features (tick -> vector)
    or orders completed (completion - intended send)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result.extra["steps"]
    orders = "achieved_per_s" in steps[0]
    rate_key, unit, what = (
        ("achieved_per_s", "orders/s", "order") if orders else ("features_per_s", "ticks/s", "tick -> vector")
    )
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = [max(s[rate_key], 1e-3) for s in steps]
    for key, label, style in (("latency_p50_ms", "p50", "o-"), ("latency_p99_ms", "p99", "s--")):
        ys = [math.nan if s[key] is None else s[key] for s in steps]
        ax.plot(xs, ys, style, label=f"{what} {label}")
    for x, s in zip(xs, steps, strict=True):
        ax.annotate(
            f"{s['rate_per_s']:,.0f}/s asked" + ("" if s["kept_up"] else "\nfell behind"),
            (x, s["latency_p99_ms"] or 0), fontsize=7, textcoords="offset points",
            xytext=(6, -14), color="#2a9d3f" if s["kept_up"] else "#c0392b",
        )  # fmt: skip
    if target is not None and target.goal_rate_per_s is not None:
        ax.axvline(target.goal_rate_per_s, color="#2a9d3f", linestyle="--", label=f"goal ({unit})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{unit} {'completed' if orders else 'consumed by features'} (log)")
    ax.set_ylabel("latency, ms (log)")
    sustained = result.extra.get("sustained_rate_per_s", 0)
    ax.set_title(f"{result.key} vs latency: {sustained:,} {unit} sustained")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_plots(run: Run, out_dir: Path) -> dict[str, str]:
    """PNG per measured result plus an overview; returns key -> file name."""
    plots: dict[str, str] = {}
    for r in run.paths:
        if r.has_numbers and r.extra.get("steps"):
            name = f"{r.key}_vs_latency.png"
            plot_throughput(r, BY_KEY.get(r.target), out_dir / name)
            plots[f"{r.key}_vs_latency"] = name
    for r in [*run.floors, *run.paths]:
        if r.has_numbers and r.histogram:
            name = f"{r.key}.png"
            plot_result(r, BY_KEY.get(r.target), out_dir / name)
            plots[r.key] = name
    if plots:
        plot_overview(run, out_dir / "overview.png")
        plots["overview"] = "overview.png"
    return plots


def write_report(run: Run, out_dir: Path, *, with_plots: bool = True) -> dict[str, Path]:
    """results.json, report.md and the PNGs into `out_dir` (stale PNGs removed first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    json_path = out_dir / "results.json"
    write_json(run, json_path)
    plots = write_plots(run, out_dir) if with_plots else {}
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(run, plots), encoding="utf-8")
    return {"json": json_path, "markdown": md_path, **{k: out_dir / v for k, v in plots.items()}}
