"""Runs the whole platform locally: infrastructure, then the eleven services,
each as its own process, with prefixed logs; Ctrl-C (or SIGTERM) stops everything.

A service that crashes after the platform came up is restarted on its own,
with exponential backoff (:class:`RestartPolicy`), the others keep running:
one crashed service used to stop the whole platform, turning a local bug or
an OOM kill into a full restart of eleven processes. A service that exits
during start-up still fails the start at once (tests that start platforms
rely on that: a broken service must fail them fast, not loop).

Readiness is the standard grpc.health.v1 Check of each service, so "up" means
exactly what an orchestrator would see. The ports are mutual TLS
(docs/security.md): the checks dial as the ``operator`` principal, and in
development the local PKI is created once before any service starts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog
from grpc_health.v1 import health_pb2

from runtime.config import SERVICE_NAMES, Settings, to_env
from runtime.health import HealthProbe, probe
from runtime.security.credentials import credentials_for
from runtime.security.pki import ensure_pki
from runtime.security.principals import OPERATOR
from tools.infra import LocalInfra, database_of, drop_database, free_port, vector_admin_dsn

log = structlog.get_logger("platform.supervisor")

_COLOURS = itertools.cycle(["36", "32", "33", "35", "34", "91", "92", "93", "95", "96", "94"])


_SERVING_STATUS: dict[str, int] = dict(health_pb2.HealthCheckResponse.ServingStatus.items())


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
    answer = await health_probe(settings, callee, address, service, timeout=timeout)
    # No answer (the status is a gRPC error code): 0, UNKNOWN.
    return _SERVING_STATUS.get(answer.status, 0)


async def health_probe(
    settings: Settings,
    callee: str,
    address: str | None = None,
    service: str = "",
    timeout: float = 1.0,
) -> HealthProbe:
    """As :func:`check_health`, with the status name and the reason the
    server gives when it is not SERVING (runtime.health)."""
    credentials = credentials_for(settings, OPERATOR)
    target = address or settings.dial_target(callee)
    async with credentials.channel(target, callee, [], []) as channel:
        return await probe(channel, service, timeout=timeout)


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


async def spawn(
    name: str, argv: Sequence[str], env: dict[str, str], colour: str, width: int
) -> ServiceProcess:
    """Start one child with its output pumped to ours, prefixed with `name`."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order.
    )
    assert proc.stdout is not None
    pump = asyncio.create_task(_pump(name, colour, proc.stdout, width))
    return ServiceProcess(name, proc, pump)


@dataclass(frozen=True, slots=True)
class Replica:
    """One process of a service: ``name`` is how the supervisor and the logs
    call it (the service's name, or ``<service>-<n>`` when it runs several),
    ``env`` its own settings on top of the platform's."""

    name: str
    service: str
    env: dict[str, str]


def plan_replicas(settings: Settings, names: Sequence[str], replicas: int = 1) -> list[Replica]:
    """The processes that run ``names`` with ``replicas`` each. With more than
    one, each replica listens on its own spare port (the first keeps the
    service's address) and ``settings.service_addresses`` is changed in place
    to list them all, so every client balances over them (runtime.grpc_client);
    each serves its metrics on its port + 1000 (the default; free_port keeps
    that spare too); gateway replicas
    beyond the first serve REST and the edge on spare ports."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    if replicas == 1:
        return [Replica(name, name, {}) for name in names]
    plan: list[Replica] = []
    for service in names:
        if service == "analytics" and not settings.clickhouse.url:
            # The embedded ClickHouse (chdb) is an engine inside one process:
            # analytics on it runs once; on a ClickHouse server it scales too.
            plan.append(Replica(service, service, {}))
            continue
        first = settings.replica_addresses(service)[0]
        host = first.rpartition(":")[0]
        addresses = [first, *(f"{host}:{free_port()}" for _ in range(replicas - 1))]
        settings.service_addresses[service] = ",".join(addresses)
        for index, address in enumerate(addresses):
            env = {"TRADING_LISTEN_ADDRESS": address, "TRADING_REPLICA_ID": f"{service}-{index + 1}"}
            if index > 0 and service == "gateway":
                env["TRADING_GATEWAY__HTTP_PORT"] = str(free_port())
                env["TRADING_GATEWAY__GRPC_PORT"] = str(free_port())
            plan.append(Replica(f"{service}-{index + 1}", service, env))
    return plan


def service_spawner(
    settings: Settings, plan: Sequence[Replica]
) -> Callable[[str], Awaitable[ServiceProcess]]:
    """Starts a planned process by name (the same way on first start and on restart)."""
    # Children get the supervisor's effective settings, so tests and `run` agree.
    env = {**os.environ, **to_env(settings), "PYTHONUNBUFFERED": "1"}
    width = max(len(r.name) for r in plan)
    colours = {r.service: next(_COLOURS) for r in plan}
    by_name = {r.name: r for r in plan}

    def start(name: str) -> Awaitable[ServiceProcess]:
        replica = by_name[name]
        return spawn(
            name, service_argv(replica.service), {**env, **replica.env}, colours[replica.service], width
        )

    return start


async def start_services(settings: Settings, names: Sequence[str]) -> list[ServiceProcess]:
    plan = plan_replicas(settings, names)
    start = service_spawner(settings, plan)
    return [await start(r.name) for r in plan]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to restart a crashed service: after ``initial_s``, doubling per
    crash up to ``max_s``; an instance that stayed up ``stable_after_s`` counts
    as healthy, so its next crash starts from ``initial_s`` again.

    Why backoff: a service that crashes at once on every start (bad config,
    a dependency down) would otherwise spin the CPU and flood the log; the cap
    keeps a long-broken service retried twice a minute, so it comes back by
    itself once the cause is fixed.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    stable_after_s: float = 60.0

    def next_delay(self, previous_delay_s: float | None, uptime_s: float) -> float:
        """The wait before the next start, given the wait before the last one
        (None: never restarted) and how long that instance ran."""
        if previous_delay_s is None or uptime_s >= self.stable_after_s:
            return self.initial_s
        return min(previous_delay_s * self.factor, self.max_s)


class Supervisor:
    """Keeps running services running: restarts each one that exits (any exit,
    since none of them is meant to end on its own) after :class:`RestartPolicy`'s
    delay, until :meth:`stop`. ``restarts`` counts restarts per service."""

    def __init__(
        self,
        start: Callable[[str], Awaitable[ServiceProcess]],
        procs: Sequence[ServiceProcess],
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._start = start
        self.policy = policy or RestartPolicy()
        self._clock = clock
        self.procs: dict[str, ServiceProcess] = {sp.name: sp for sp in procs}
        self.restarts: collections.Counter[str] = collections.Counter()
        self._stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    def watch(self) -> None:
        """Start watching every service (call once, in the running loop)."""
        now = self._clock()
        self._watchers = [asyncio.create_task(self._keep_running(name, now)) for name in self.procs]

    async def _keep_running(self, name: str, started_at: float) -> None:
        delay: float | None = None
        while True:
            sp = self.procs[name]
            code = await sp.process.wait()
            if self._stopping.is_set():
                return
            uptime = self._clock() - started_at
            delay = self.policy.next_delay(delay, uptime)
            log.warning(
                "service_exited",
                service=name,
                exit_code=code,
                uptime_s=round(uptime, 3),
                restart_in_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            await sp.pump  # the dead child's output, to its end
            started_at = self._clock()
            try:
                self.procs[name] = await self._start(name)
            except OSError as exc:
                # Could not even spawn it: the old (dead) entry stays, so the
                # loop comes round at once and backs off further.
                log.error("service_restart_failed", service=name, error=str(exc))
                continue
            self.restarts[name] += 1
            log.warning(
                "service_restarted",
                service=name,
                pid=self.procs[name].process.pid,
                restarts_total=self.restarts[name],
            )

    async def stop(self, grace: float) -> None:
        """Stop restarting, then stop every service (SIGTERM, SIGKILL after `grace`)."""
        self._stopping.set()
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await stop_services(list(self.procs.values()), grace)


async def wait_serving(settings: Settings, names: Sequence[str], timeout: float) -> list[str]:
    """Wait until every replica of every service answers SERVING; return the
    services of which some replica did not in time."""
    pending = {(n, address) for n in names for address in settings.replica_addresses(n)}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        order = list(pending)
        results = await asyncio.gather(*(check_health(settings, n, a) for n, a in order))
        pending -= {replica for replica, status in zip(order, results, strict=True) if status == 1}
        if pending:
            await asyncio.sleep(0.2)
    return sorted({n for n, _ in pending})


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
    restart_policy: RestartPolicy | None = None,
    up_event: asyncio.Event | None = None,
    replicas: int = 1,
) -> int:
    """Bring up infrastructure and services (``replicas`` processes of each:
    :func:`plan_replicas`, which lists them in ``settings.service_addresses``);
    run until `stop_event` (or Ctrl-C, SIGTERM), restarting a process that
    crashes once all were up."""
    stop = stop_event or asyncio.Event()
    stop_on_signals(stop)
    began = time.monotonic()
    await asyncio.to_thread(prepare_pki, settings)
    plan = plan_replicas(settings, names, replicas)
    # Services start while Kafka (tansu on S3, after SeaweedFS) is still coming
    # up: they import their code meanwhile and wait for their dependencies.
    async with LocalInfra(settings, kafka_in_background=True) as infra:
        start = service_spawner(settings, plan)
        procs = [await start(r.name) for r in plan]
        supervisor = Supervisor(start, procs, restart_policy)
        try:
            # Start-up: any exit fails fast (see the module docstring).
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
            died.cancel()
            not_ready = waiter.result()
            if not_ready:
                print(
                    f"platform: not SERVING after {ready_timeout:.0f}s: {', '.join(not_ready)}",
                    file=sys.stderr,
                )
                return 1
            if replicas > 1:
                for service in names:
                    print(f"platform: {service} replicas on {settings.address_of(service)}", flush=True)
            print(
                f"platform: all {len(names)} services SERVING ({replicas} replica(s) each) "
                f"after {time.monotonic() - began:.1f}s; "
                f"gateway on http://{settings.gateway.host}:{settings.gateway.http_port}, "
                f"gRPC edge on {settings.gateway.host}:{settings.gateway.grpc_port} (TLS) (Ctrl-C stops)",
                flush=True,
            )
            # Up: a crash restarts that service only. `up_event` tells a caller
            # (a test) that start-up is over: a crash from now on is restarted,
            # while before it fails the start.
            supervisor.watch()
            if up_event is not None:
                up_event.set()
            await stop.wait()
            return 0
        finally:
            print("platform: stopping services", file=sys.stderr, flush=True)
            await supervisor.stop(settings.shutdown_grace_s + 2)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Ctrl-C (SIGINT) and SIGTERM set `stop`: the supervisor then stops every
    service in order, pending restarts included (see :meth:`Supervisor.stop`)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


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
    settings.gateway.grpc_port = free_port()
    settings.var_dir = var_dir
    settings.postgres.dsn = with_database(base.postgres.dsn, f"platform_{uuid.uuid4().hex[:12]}")
    # ...and on the vectors server (the base's, pgvector), a database of the same name.
    settings.vectors.postgres_dsn = with_database(
        base.vectors.postgres_dsn, database_of(settings.postgres.dsn)
    )
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
    settings: Settings,
    names: Sequence[str] = SERVICE_NAMES,
    *,
    ready_timeout: float = 60.0,
    replicas: int = 1,
) -> AsyncIterator[float]:
    """Run the platform (as `./dev run` does) for the duration of the block;
    yields the seconds it took until every service was SERVING. The database is
    dropped afterwards when it is one `isolated_settings` made. With
    ``replicas`` > 1, ``settings.service_addresses`` lists each service's
    replicas once this yields."""
    stop, up = asyncio.Event(), asyncio.Event()
    began = time.monotonic()
    task = asyncio.create_task(
        run_platform(
            settings, names, stop_event=stop, ready_timeout=ready_timeout, up_event=up, replicas=replicas
        )
    )
    try:
        # Up as the supervisor sees it: from then on a crashed service is
        # restarted (fault tests kill services), before it fails the start.
        waiter = asyncio.create_task(up.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            raise RuntimeError(f"platform exited during start-up (code {task.result()})")
        yield time.monotonic() - began
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        name = database_of(settings.postgres.dsn)
        if name.startswith("platform_"):
            with contextlib.suppress(Exception):
                await drop_database(settings.postgres.admin_dsn, name)
            if database_of(settings.vectors.postgres_dsn) == name and not settings.vectors.weaviate_url:
                with contextlib.suppress(Exception):
                    await drop_database(vector_admin_dsn(settings.vectors.postgres_dsn), name)


async def _first_exit(procs: Sequence[ServiceProcess]) -> str:
    waits = {asyncio.create_task(sp.process.wait()): sp.name for sp in procs}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return waits[next(iter(done))]
