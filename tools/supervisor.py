"""Runs the whole platform locally: infrastructure, then the eleven services,
each as its own process, with prefixed logs; Ctrl-C stops everything.

Readiness is the standard grpc.health.v1 Check of each service, so "up" means
exactly what an orchestrator would see. The ports are mutual TLS
(docs/security.md): the checks dial as the ``operator`` principal, and in
development the local PKI is created once before any service starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.config import SERVICE_NAMES, Settings, to_env
from runtime.security.credentials import credentials_for
from runtime.security.pki import ensure_pki
from runtime.security.principals import OPERATOR
from tools.infra import LocalInfra, database_of, drop_database, free_port

_COLOURS = itertools.cycle(["36", "32", "33", "35", "34", "91", "92", "93", "95", "96", "94"])


async def check_health(
    settings: Settings,
    callee: str,
    address: str | None = None,
    service: str = "",
    timeout: float = 1.0,
) -> int:
    """grpc.health.v1 Check of the server of ``callee`` (a service name: the name
    its certificate must carry) at ``address`` (default: its address in the
    settings), over mutual TLS as the operator; ``service`` is the health
    service name ('' = the whole server). Returns the ServingStatus number (0
    on no answer)."""
    credentials = credentials_for(settings, OPERATOR)
    target = address or settings.address_of(callee)
    async with credentials.channel(target, callee, [], []) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError:
            return 0  # UNKNOWN
        return int(reply.status)


@dataclass
class ServiceProcess:
    name: str
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None]


async def _pump(name: str, colour: str, stream: asyncio.StreamReader, width: int) -> None:
    """Copy a child's output line by line, prefixed with its name."""
    tty = sys.stdout.isatty()
    prefix = f"\x1b[{colour}m{name:<{width}}\x1b[0m | " if tty else f"{name:<{width}} | "
    while line := await stream.readline():
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


def service_argv(name: str) -> list[str]:
    """How a service is started: its package's entry point."""
    module = "gateway" if name == "gateway" else f"services.{name}"
    return [sys.executable, "-m", module]


async def start_services(settings: Settings, names: Sequence[str]) -> list[ServiceProcess]:
    # Children get the supervisor's effective settings, so tests and `run` agree.
    env = {**os.environ, **to_env(settings), "PYTHONUNBUFFERED": "1"}
    width = max(len(n) for n in names)
    started: list[ServiceProcess] = []
    for name in names:
        proc = await asyncio.create_subprocess_exec(
            *service_argv(name),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order.
        )
        assert proc.stdout is not None
        pump = asyncio.create_task(_pump(name, next(_COLOURS), proc.stdout, width))
        started.append(ServiceProcess(name, proc, pump))
    return started


async def wait_serving(settings: Settings, names: Sequence[str], timeout: float) -> list[str]:
    """Wait until every service answers SERVING; return those that did not in time."""
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        results = await asyncio.gather(*(check_health(settings, n) for n in pending))
        pending -= {n for n, status in zip(list(pending), results, strict=True) if status == 1}
        if pending:
            await asyncio.sleep(0.2)
    return sorted(pending)


async def stop_services(procs: Sequence[ServiceProcess], grace: float) -> None:
    """SIGTERM everyone (services drain in-flight calls), SIGKILL stragglers."""
    for sp in procs:
        if sp.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                sp.process.send_signal(signal.SIGTERM)

    async def reap(sp: ServiceProcess) -> None:
        try:
            await asyncio.wait_for(sp.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                sp.process.kill()
            await sp.process.wait()
        await sp.pump

    await asyncio.gather(*(reap(sp) for sp in procs))


async def run_platform(
    settings: Settings,
    names: Sequence[str] = SERVICE_NAMES,
    *,
    ready_timeout: float = 60.0,
    stop_event: asyncio.Event | None = None,
) -> int:
    """Bring up infrastructure and services; run until `stop_event` (or Ctrl-C)."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    began = time.monotonic()
    await asyncio.to_thread(prepare_pki, settings)
    # Services start while Kafka (tansu on S3, after SeaweedFS) is still coming
    # up: they import their code meanwhile and wait for their dependencies.
    async with LocalInfra(settings, kafka_in_background=True) as infra:
        procs = await start_services(settings, names)
        try:
            waiter = asyncio.create_task(wait_serving(settings, names, ready_timeout))
            died = asyncio.create_task(_first_exit(procs))
            kafka = asyncio.create_task(infra.kafka_ready())
            done, _ = await asyncio.wait({waiter, died, kafka}, return_when=asyncio.FIRST_COMPLETED)
            if kafka in done and kafka.exception() is None:
                done, _ = await asyncio.wait({waiter, died}, return_when=asyncio.FIRST_COMPLETED)
            if kafka.done() and kafka.exception() is not None:
                waiter.cancel()
                died.cancel()
                print(f"platform: Kafka did not start: {kafka.exception()}", file=sys.stderr)
                return 1
            kafka.cancel()
            if died in done:
                waiter.cancel()
                print(f"platform: {died.result()} exited during start-up", file=sys.stderr)
                return 1
            not_ready = waiter.result()
            if not_ready:
                print(
                    f"platform: not SERVING after {ready_timeout:.0f}s: {', '.join(not_ready)}",
                    file=sys.stderr,
                )
                died.cancel()
                return 1
            print(
                f"platform: all {len(names)} services SERVING after {time.monotonic() - began:.1f}s; "
                f"gateway on http://{settings.gateway.host}:{settings.gateway.http_port} (Ctrl-C stops)",
                flush=True,
            )
            stopped = asyncio.create_task(stop.wait())
            finished, _ = await asyncio.wait({died, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if died in finished:
                print(f"platform: {died.result()} exited; stopping everything", file=sys.stderr)
                return 1
            died.cancel()
            return 0
        finally:
            print("platform: stopping services", file=sys.stderr, flush=True)
            await stop_services(procs, settings.shutdown_grace_s + 2)


def prepare_pki(settings: Settings) -> None:
    """In development, the local CA and every principal's certificate, made once
    here: eleven processes starting at once must not each find them missing."""
    security = settings.security
    if security.is_development(settings.environment) and security.cert_file is None:
        ensure_pki(security.pki_path(settings.var_dir), security.trust_domain)


def isolated_settings(base: Settings, var_dir: Path) -> Settings:
    """`base` made private to one test or benchmark platform: every service and
    the gateway on spare ports, a database of its own on the same PostgreSQL
    server, and its own Redis, NATS and tansu (on its own S3 server) on spare ports (LocalInfra starts
    them, since nothing answers there), so its services never see another
    platform's or test's keys, subjects, topics or rows."""
    settings = base.model_copy(deep=True)
    settings.service_addresses = {name: f"127.0.0.1:{free_port()}" for name in SERVICE_NAMES}
    settings.gateway.http_port = free_port()
    settings.var_dir = var_dir
    settings.postgres.dsn = with_database(base.postgres.dsn, f"platform_{uuid.uuid4().hex[:12]}")
    settings.redis.url = f"redis://127.0.0.1:{free_port()}/0"
    settings.nats.url = f"nats://127.0.0.1:{free_port()}"
    settings.kafka.bootstrap_servers = ""  # LocalInfra starts tansu on local_port
    settings.kafka.local_port = free_port()
    # ...storing on its own SeaweedFS (in var_dir) on a spare S3 port.
    settings.kafka.s3_endpoint = ""
    settings.kafka.s3_port = free_port()
    settings.clickhouse.url = ""
    # The services' own chdb folder (one engine path per process).
    settings.clickhouse.chdb_path = var_dir / "chdb-services"
    return settings


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name`."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def platform_running(
    settings: Settings, names: Sequence[str] = SERVICE_NAMES, *, ready_timeout: float = 60.0
) -> AsyncIterator[float]:
    """Run the platform (as `./dev run` does) for the duration of the block;
    yields the seconds it took until every service was SERVING. The database is
    dropped afterwards when it is one `isolated_settings` made."""
    stop = asyncio.Event()
    began = time.monotonic()
    task = asyncio.create_task(run_platform(settings, names, stop_event=stop, ready_timeout=ready_timeout))
    try:
        waiter = asyncio.create_task(wait_serving(settings, names, timeout=ready_timeout))
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            raise RuntimeError(f"platform exited during start-up (code {task.result()})")
        not_ready = waiter.result()
        if not_ready:
            raise RuntimeError(f"not SERVING after {ready_timeout:.0f}s: {', '.join(not_ready)}")
        yield time.monotonic() - began
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        name = database_of(settings.postgres.dsn)
        if name.startswith("platform_"):
            with contextlib.suppress(Exception):
                await drop_database(settings.postgres.admin_dsn, name)


async def _first_exit(procs: Sequence[ServiceProcess]) -> str:
    waits = {asyncio.create_task(sp.process.wait()): sp.name for sp in procs}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return waits[next(iter(done))]
