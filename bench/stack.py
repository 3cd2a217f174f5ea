"""The platform under test, brought up the way `./dev run` brings it up
(tools.supervisor.run_platform: infrastructure reused or started, then the
service processes, ready when grpc.health says SERVING), but isolated
(tools.supervisor.isolated_settings): spare ports, a database of its own on
the shared PostgreSQL server (dropped afterwards), and its own Redis, NATS and
tansu, so a benchmark never touches a colleague's data or a running
`./dev run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.feed import FeedControl
from runtime.config import SERVICE_NAMES, Settings
from services.decision import train
from services.decision.settings import TrainingSettings
from tools.supervisor import isolated_settings, platform_running

ROOT = Path(__file__).resolve().parent.parent
# Decision's models, trained once (small, ~10 s) and reused by later runs:
# decision would otherwise train its full default set during start-up.
MODEL_CACHE = ROOT / "var" / "bench" / "models"
# Promoted without the quality gate: the benchmark needs both models, and 2 x 2,500 ticks is too
# little for the gate to judge (services/decision/domain/evaluation.py).
MODEL_TRAINING = TrainingSettings(
    ticks_per_symbol=2500, symbols=["BTC-USD", "ETH-USD"], seed=5, promote_without_gate=True
)
# The feed rate while the closed-loop paths run (quotes stay fresh for risk,
# execution and GetQuote): the platform's default rate.
BASELINE_FEED_RATE = 50.0
# Environment read by service processes (their own settings sections, not in
# Settings, which the supervisor hands over itself): decision loads the cached
# models instead of training at start.
SERVICE_ENV = {
    "TRADING_DECISION__TRAIN_IF_MISSING": "false",
}


@dataclass
class Stack:
    settings: Settings
    run_id: str
    var_dir: Path
    startup_s: float
    services: tuple[str, ...]
    log_path: Path
    feed: FeedControl = field(repr=False)


def bench_settings(base: Settings, var_dir: Path) -> Settings:
    """`base` isolated (tools.supervisor.isolated_settings): spare ports, its own
    database, Redis, NATS and tansu."""
    settings = isolated_settings(base, var_dir)
    # Service logs go to the log file; warnings are enough there.
    settings.telemetry.log_level = "WARNING"
    # Ticks come from bench.feed's process, at the rate each path asks for.
    settings.marketdata.feed = "none"
    # The benchmark drives invented subjects and watches every tenant's orders:
    # its NATS server gets the harness user (development only).
    settings.nats.test_harness = True
    # The gateway's per-tenant rate limit (600/min by default) would answer 429
    # within a second of closed-loop calls; a limit this high keeps the
    # limiter's Redis step in the path without ever tripping it.
    settings.gateway.rate_limit_requests = 1_000_000_000
    return settings


async def ensure_models(var_dir: Path) -> None:
    """<var_dir>/models (where the decision process looks) from the cache, training it first if empty."""
    # A cache without promotion pointers predates the quality gate: decision would serve none of it.
    if not any(MODEL_CACHE.glob("*/promoted.json")):
        tmp = MODEL_CACHE.with_name(f"models-{uuid.uuid4().hex[:8]}")
        await asyncio.to_thread(train.train, tmp, MODEL_TRAINING)
        shutil.rmtree(MODEL_CACHE, ignore_errors=True)
        tmp.rename(MODEL_CACHE)
    await asyncio.to_thread(shutil.copytree, MODEL_CACHE, var_dir / "models", dirs_exist_ok=True)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set `values` in os.environ (inherited by the service processes) for the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.asynccontextmanager
async def platform(
    services: Sequence[str] = SERVICE_NAMES, *, ready_timeout: float = 90.0, keep_dir: Path | None = None
) -> AsyncIterator[Stack]:
    """Run the platform for the duration of the block. Service output goes to
    ``<var>/platform.log`` rather than the terminal."""
    run_id = uuid.uuid4().hex[:10]
    var_dir = keep_dir or Path(tempfile.mkdtemp(prefix=f"bench-{run_id}-"))
    var_dir.mkdir(parents=True, exist_ok=True)
    settings = bench_settings(Settings(), var_dir)
    log_path = var_dir / "platform.log"
    await ensure_models(var_dir)
    # Opened once at start-up, before any measurement: blocking is harmless here.
    with (
        open(log_path, "w", encoding="utf-8") as log,  # noqa: ASYNC230
        contextlib.redirect_stdout(log),
        _environment(SERVICE_ENV),
    ):
        # The supervisor prefixes and copies every service's output to sys.stdout.
        try:
            async with platform_running(settings, services, ready_timeout=ready_timeout) as startup_s:
                feed = FeedControl(settings, var_dir)
                try:
                    await feed.run_at(BASELINE_FEED_RATE)
                    stack = Stack(settings, run_id, var_dir, startup_s, tuple(services), log_path, feed)
                    print(f"bench: platform SERVING after {startup_s:.1f}s", file=sys.stderr, flush=True)
                    yield stack
                finally:
                    await feed.stop()
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; see {log_path}") from exc
