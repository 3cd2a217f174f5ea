"""The tick source of a benchmark run: the platform's own marketdata service
(`python -m services.marketdata`, same code, same environment) started as an
extra process whose synthetic feed runs at a chosen rate.

marketdata reads ``settings.marketdata.feed_rate`` once at start, so changing
the rate means starting the process again; the platform's marketdata process
itself runs with ``feed=none`` (it still serves the gRPC API from the same
Redis), so exactly one feed publishes ticks at any time and the features'
indicators never see two interleaved price walks of one symbol.

Also here: reading a service's Prometheus counters (each gRPC service serves
``/metrics`` on its gRPC port + 1000, or ``telemetry.metrics_port``) and the
pids of the platform's service processes (for py-spy).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from runtime.config import Settings, to_env
from tools.infra import free_port
from tools.supervisor import check_health, service_argv

TICKS_ACCEPTED = "trading_marketdata_ticks_accepted_total"
CONSUMED = "trading_messaging_consumed_total"


@dataclass
class FeedProcess:
    rate_per_s: float
    process: asyncio.subprocess.Process
    address: str
    metrics_url: str

    @property
    def pid(self) -> int:
        return self.process.pid


class FeedControl:
    """At most one feed process at a time; `run_at(rate)` restarts it at `rate`."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self._settings = settings
        self._log_dir = log_dir
        self.current: FeedProcess | None = None
        self.stopped_at: float | None = None  # time.monotonic() of the last stop of a running feed

    async def run_at(self, rate_per_s: float, *, timeout_s: float = 60.0) -> FeedProcess:
        if self.current is not None and self.current.rate_per_s == rate_per_s:
            return self.current
        await self.stop()
        settings = self._settings.model_copy(deep=True)
        port, metrics_port = free_port(), free_port()
        address = f"127.0.0.1:{port}"
        settings.service_addresses = {**settings.service_addresses, "marketdata": address}
        settings.marketdata.feed = "synthetic"
        settings.marketdata.feed_rate = rate_per_s
        settings.telemetry.metrics_port = metrics_port
        env = {**os.environ, **to_env(settings), "PYTHONUNBUFFERED": "1"}
        log_path = self._log_dir / f"feed-{rate_per_s:g}.log"
        with open(log_path, "ab") as log:  # noqa: ASYNC230 - opened once per restart, before measuring
            process = await asyncio.create_subprocess_exec(
                *service_argv("marketdata"), stdout=log, stderr=asyncio.subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        feed = FeedProcess(rate_per_s, process, address, f"http://127.0.0.1:{metrics_port}/metrics")
        self.current = feed
        deadline = time.monotonic() + timeout_s
        # Up means publishing: SERVING, and holding the feed lease (only its
        # holder runs the feed: services/marketdata/main.py).
        while not (
            await check_health(settings, "marketdata", address) == 1 and await _leading(feed.metrics_url)
        ):
            if process.returncode is not None:
                raise RuntimeError(f"feed process exited with {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"feed process not leading after {timeout_s:.0f}s; see {log_path}")
            await asyncio.sleep(0.1)
        return feed

    async def stop(self) -> None:
        feed, self.current = self.current, None
        if feed is None or feed.process.returncode is not None:
            return
        self.stopped_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            feed.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(feed.process.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                feed.process.kill()
            await feed.process.wait()


async def _leading(metrics_url: str) -> bool:
    """Does the marketdata process at ``metrics_url`` hold the feed lease?"""
    try:
        async with httpx.AsyncClient() as client:
            return await counter(client, metrics_url, "trading_lease_held", {"lease": "marketdata.feed"}) == 1
    except httpx.HTTPError:
        return False


async def counter(client: httpx.AsyncClient, url: str, name: str, labels: dict[str, str]) -> float:
    """Sum of the samples of counter `name` whose labels include `labels`."""
    text = (await client.get(url, timeout=5)).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def metrics_url(settings: Settings, service: str) -> str:
    """A platform service's /metrics (gRPC port + 1000 unless a port is configured)."""
    host, port = settings.address_of(service).rsplit(":", 1)
    metrics_port = settings.telemetry.metrics_port or int(port) + 1000
    return f"http://{host}:{metrics_port}/metrics"


def service_pids(services: tuple[str, ...], exclude: frozenset[int] = frozenset()) -> dict[str, int]:
    """Pids of this process's children running `python -m services.<name>` / `-m gateway`
    (but not those in `exclude`, e.g. the feed process)."""
    me = os.getpid()
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid != me or int(entry.name) in exclude:
            continue
        for name in services:
            module = ("gateway" if name == "gateway" else f"services.{name}").encode()
            if b"-m" in argv and module in argv:
                found[name] = int(entry.name)
    return found
