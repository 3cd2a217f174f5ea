"""The gRPC server every service runs.

    await serve("risk", settings=settings, register=register, ready_check=ready, cleanup=close)

or, when the caller needs the port or controls the lifetime (tests, tools),
:class:`ServiceRunner` with ``start()`` / ``stop()``.

What it sets up:
* a ``grpc.aio`` server with the standard interceptor chain
  (:func:`standard_interceptors`), keepalive and message
  size options, bound to ``settings.bind_address(service_name)`` (its own
  listen address when it is one of several replicas);
* ``grpc.health.v1``: NOT_SERVING for "" and every registered service until
  ``ready_check()`` says True, then SERVING; the check keeps being polled so
  health follows the dependencies (a check that raises stops the process:
  start-up failed for good), and turns NOT_SERVING too while a background
  component of the :class:`runtime.health.HealthMonitor` is stuck, except
  ``runtime.health.CALLS_HEALTH_SERVICE`` (what load balancing watches),
  SERVING from the first time ``ready_check()`` says True until shutdown; a Check
  reply that is not SERVING says why in its trailing metadata
  (``runtime.health.HEALTH_REASON_KEY``);
* server reflection for every registered service;
* a Prometheus ``/metrics`` endpoint (``telemetry.metrics_port``, 0 meaning
  gRPC port + 1000) on the default registry: the platform's metrics, the
  process' own (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
  ``process_open_fds``, ...; Linux), the Python GC's (``python_gc_*``) and
  ``trading_service_info{service}`` = 1, which names the service of every
  series scraped from the same target (``* on(instance) group_left(service)``);
* graceful shutdown on SIGTERM/SIGINT: health NOT_SERVING first (load
  balancers stop sending), then ``server.stop(grace)`` lets in-flight calls
  finish, then the cleanup callbacks close resources (last registered first).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.trace import TracerProvider
from prometheus_client import Gauge, start_http_server

from runtime.config import Settings
from runtime.contracts import services
from runtime.health import (
    CALLS_HEALTH_SERVICE,
    HEALTH_REASON_KEY,
    HealthMonitor,
    default_monitor,
    stuck_reason,
)
from runtime.interceptors import ServerCallInterceptor, ValidationInterceptor
from runtime.security.credentials import PrincipalCredentials, credentials_for
from runtime.security.guard import CallGuard
from runtime.telemetry import setup_telemetry

log = logging.getLogger(__name__)

Register = Callable[[grpc.aio.Server], Sequence[str] | None]
ReadyCheck = Callable[[], Awaitable[bool]]
Cleanup = Callable[[], Awaitable[None]]

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # Accept the clients' keepalive pings (grpc_client pings every 30 s).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    # Fail loudly when the port is taken instead of sharing it with another process.
    ("grpc.so_reuseport", 0),
    # Clients reconnect every few minutes (a GOAWAY; calls in flight finish,
    # streams too: the grace is unlimited), which makes a DNS-named client
    # resolve again and spread onto replicas added since it connected.
    ("grpc.max_connection_age_ms", 300_000),
)

_HEALTH = health_pb2.HealthCheckResponse
_INFRA_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME)
_INFRA_PREFIXES = tuple(f"/{name}/" for name in _INFRA_SERVICES)

SERVICE_INFO = Gauge(
    "trading_service_info",
    "1 for the platform service this process serves: join on instance to name the"
    " service of series without the label (process_*, python_gc_*).",
    ("service",),
)


def _traced(details: grpc.HandlerCallDetails) -> bool:
    """Trace filter: no spans for health checks and reflection (noise, and the
    health Watch handler writes with ``context.write``, which OTel's stream
    wrapper does not support). One ``startswith`` per call."""
    return not details.method.startswith(_INFRA_PREFIXES)


def standard_interceptors(
    tracer_provider: TracerProvider | None = None, guard: CallGuard | None = None
) -> list[grpc.aio.ServerInterceptor]:
    """OpenTelemetry span -> caller check/context/log/metrics -> protovalidate
    (outermost first). ``tracer_provider`` defaults to the global one (set by
    ``setup_telemetry``); ``guard`` admits callers (runtime.security.guard)."""
    return [
        aio_server_interceptor(tracer_provider=tracer_provider, filter_=_traced),  # type: ignore[no-untyped-call]
        ServerCallInterceptor(guard=guard),
        ValidationInterceptor(),
    ]


class ReasonedHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health has no types
    """The standard health servicer, plus why it is not SERVING: the health
    protocol has no field for it, so the reason rides in the trailing
    metadata of Check (standard clients ignore it; the gateway's /readyz and
    ``tradingctl health`` read it)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        reply = await super().Check(request, context)
        if self.reason and reply is not None and reply.status != _HEALTH.SERVING:
            context.set_trailing_metadata(((HEALTH_REASON_KEY, self.reason),))
        return reply


def _contract_services(service: str) -> list[str]:
    prefix = f"trading.{service}."
    return [svc.full_name for svc in services() if svc.full_name.startswith(prefix)]


class ServiceRunner:
    """One service's gRPC server with health, reflection, metrics and shutdown."""

    def __init__(
        self,
        service: str,
        settings: Settings,
        register: Register,
        *,
        ready_check: ReadyCheck | None = None,
        cleanup: Cleanup | Iterable[Cleanup] | None = None,
        address: str | None = None,
        metrics_port: int | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] | None = None,
        tracer_provider: TracerProvider | None = None,
        ready_poll_s: float = 0.5,
        options: Sequence[tuple[str, Any]] = SERVER_OPTIONS,
        credentials: PrincipalCredentials | None = None,
        monitor: HealthMonitor | None = None,
    ) -> None:
        """``address`` overrides ``settings.address_of(service)`` (``"127.0.0.1:0"``
        picks a spare port); ``metrics_port`` overrides the settings (0: a spare
        port, -1: no metrics endpoint). ``credentials`` default to the service's
        own (its certificate; mutual TLS on the port). ``monitor`` (default: the
        process' own, runtime.health.default_monitor) holds the background
        components whose being stuck turns health NOT_SERVING; its threshold
        comes from ``settings.health``."""
        self.service = service
        self.settings = settings
        self._register = register
        self._ready_check = ready_check
        if cleanup is None:
            self._cleanups: list[Cleanup] = []
        elif callable(cleanup):
            self._cleanups = [cleanup]
        else:
            self._cleanups = list(cleanup)
        self._address = address or settings.bind_address(service)
        self._metrics_port_override = metrics_port
        self.credentials = credentials or credentials_for(settings, service)
        self._interceptors = (
            list(interceptors)
            if interceptors is not None
            else standard_interceptors(tracer_provider, self.credentials.guard)
        )
        self._ready_poll_s = ready_poll_s
        self._options = list(options)
        self.health = ReasonedHealthServicer()
        self.monitor = monitor or default_monitor()
        self.monitor.stuck_after_s = settings.health.stuck_after_s
        self.service_names: list[str] = []
        self.port = 0
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._metrics_http: Any = None
        self._ready_task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None

    @property
    def server(self) -> grpc.aio.Server:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server

    def add_cleanup(self, cleanup: Cleanup) -> None:
        """Run ``cleanup`` after the server stopped (cleanups run last-added first)."""
        self._cleanups.append(cleanup)

    async def start(self) -> None:
        server = grpc.aio.server(interceptors=self._interceptors, options=self._options)
        names = self._register(server)
        self.service_names = list(names) if names is not None else _contract_services(self.service)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection([*self.service_names, *_INFRA_SERVICES], server)
        server_credentials = self.credentials.server_credentials()
        if server_credentials is None:
            log.warning("%s: PLAINTEXT gRPC (development switch security.plaintext)", self.service)
            self.port = server.add_insecure_port(self._address)
        else:
            self.port = server.add_secure_port(self._address, server_credentials)
        for name in ("", CALLS_HEALTH_SERVICE, *self.service_names):
            await self.health.set(name, _HEALTH.NOT_SERVING)
        await server.start()
        self._server = server
        self._start_metrics()
        self._ready_task = asyncio.create_task(self._watch_readiness(), name=f"{self.service}-readiness")
        log.info(
            "%s serving gRPC on %s (port %d): %s",
            self.service,
            self._address,
            self.port,
            ", ".join(self.service_names),
        )

    def _start_metrics(self) -> None:
        port = self._metrics_port_override
        if port is None:
            port = self.settings.telemetry.metrics_port or (self.port + 1000 if self.port else 0)
        if port < 0:
            return
        host = self._address.rsplit(":", 1)[0].strip("[]") or "127.0.0.1"
        http_server, _thread = start_http_server(port, addr=host)
        self._metrics_http = http_server
        self.metrics_port = int(http_server.server_port)
        SERVICE_INFO.labels(self.service).set(1)

    async def _set_all(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def _watch_readiness(self) -> None:
        serving: bool | None = None
        taking_calls = False
        while not self._stopping:
            try:
                ready = True if self._ready_check is None else await self._ready_check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("%s: start-up failed, stopping: %r", self.service, exc, exc_info=exc)
                self.failure = exc
                self._request_stop()
                return
            # Checked even while not ready, so stuck/recovered is logged as it happens.
            stuck = self.monitor.check()
            now_serving = ready and not stuck
            if stuck:
                reason = stuck_reason(stuck)
            elif not ready:
                reason = "dependencies not ready"
            else:
                reason = ""
            self.health.reason = reason
            if ready and not taking_calls:  # until shutdown (enter_graceful_shutdown)
                taking_calls = True
                await self.health.set(CALLS_HEALTH_SERVICE, _HEALTH.SERVING)
            if now_serving != serving:
                starting = serving is None
                serving = now_serving
                await self._set_all(_HEALTH.SERVING if now_serving else _HEALTH.NOT_SERVING)
                if now_serving:
                    log.info("%s health: SERVING", self.service)
                    self._ready.set()
                else:
                    level = logging.INFO if starting else logging.WARNING
                    log.log(level, "%s health: NOT_SERVING (%s)", self.service, reason)
            await asyncio.sleep(self._ready_poll_s)

    def _request_stop(self) -> None:
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self.stop(), name=f"{self.service}-stop")

    async def wait_ready(self) -> None:
        """Wait until health turned SERVING (wrap in ``asyncio.timeout`` to bound it)."""
        await self._ready.wait()

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, stop accepting calls, let in-flight ones finish
        within ``grace`` (default ``settings.shutdown_grace_s``), then clean up."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.settings.shutdown_grace_s if grace is None else grace
        try:
            await self.health.enter_graceful_shutdown()
            if self._ready_task is not None and self._ready_task is not asyncio.current_task():
                self._ready_task.cancel()
            if self._server is not None:
                await self._server.stop(grace)
            for cleanup in reversed(self._cleanups):
                try:
                    await cleanup()
                except Exception:
                    log.exception("%s: cleanup %r failed", self.service, cleanup)
            if self._metrics_http is not None:
                # shutdown() blocks until the serving thread's loop exits.
                await asyncio.to_thread(self._metrics_http.shutdown)
                self._metrics_http.server_close()
        finally:
            self._stopped.set()
            log.info("%s stopped", self.service)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM/SIGINT (or a failed start-up), then shut down gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        try:
            await self._stopped.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if self.failure is not None:
            raise self.failure


async def serve(
    service_name: str,
    *,
    settings: Settings,
    register: Register,
    ready_check: ReadyCheck | None = None,
    cleanup: Cleanup | Iterable[Cleanup] | None = None,
    **runner_options: Any,
) -> None:
    """Set up telemetry, run the service's server until SIGTERM/SIGINT, shut down
    gracefully. Raises what ``ready_check`` raised if start-up failed."""
    setup_telemetry(settings.telemetry, service_name)
    runner = ServiceRunner(
        service_name, settings, register, ready_check=ready_check, cleanup=cleanup, **runner_options
    )
    await runner.start()
    await runner.run_until_signal()
