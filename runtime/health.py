"""A watchdog for a service's background work: is anything stuck?

grpc.health.v1 used to follow only the dependency pings (runtime.resources),
so a Kafka consumer looping on fetch errors, or an outbox relay that cannot
publish, left the service SERVING while nothing moved. Background components
(subscribers, relays, matchers, ...) now register with the process'
:class:`HealthMonitor` and report as they go::

    health = monitor.register("kafka:portfolio-fills")
    ...
    health.progress()           # a poll/fetch/batch succeeded (idle counts: nothing to read is fine)
    health.failing("fetch: KafkaConnectionError(...)")   # the loop hit an error

A component is *stuck* once it has reported failure continuously for longer
than its threshold (``HealthSettings.stuck_after_s`` unless given); one
``progress()`` clears it. The ServiceRunner (runtime.grpc_server) asks
:meth:`HealthMonitor.check` every readiness poll and turns its health
NOT_SERVING while anything is stuck, with the reason in the Check reply's
trailing metadata (``HEALTH_REASON_KEY``); the gateway's /readyz and
``tradingctl health`` show it. Each stuck/recovered transition is logged once.

Metrics (read at scrape time): ``component_stuck{component}`` (0/1) and
``component_seconds_since_progress{component}``; the outbox relays set
``outbox_backlog{service}``, and consumers ``trading_messaging_consumer_lag``
(runtime.messaging.telemetry).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Gauge

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# The grpc.health.v1 name that says "this process takes calls": SERVING from
# the first time its dependencies were ready until it shuts down. Client-side
# load balancing watches this name (runtime.grpc_client.balancing_options).
# It ignores what comes and goes later, on purpose: a replica whose consumer
# is stuck (a broker down, a rebalance) or whose database is away still
# answers its RPCs (those that need the missing piece with UNAVAILABLE and
# RetryInfo, the others normally: risk checks orders from Redis while Kafka
# is down), which is better than no replica to answer at all. "" and the
# contract services' names are the whole health, dependencies and stuck
# components included, for operators and orchestrators.
CALLS_HEALTH_SERVICE = "trading.calls"

# Trailing metadata key of a grpc.health.v1 Check reply that is not SERVING:
# why (the health protocol itself carries only the status).
HEALTH_REASON_KEY = "trading-health-reason"
# A reason is a log line, not a document: metadata stays small.
_MAX_REASON_CHARS = 300

COMPONENT_STUCK = Gauge(
    "component_stuck",
    "1 while a background component has failed for longer than its threshold.",
    ("component",),
)
COMPONENT_SECONDS_SINCE_PROGRESS = Gauge(
    "component_seconds_since_progress",
    "Seconds since a background component last reported progress (or healthy idleness).",
    ("component",),
)


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One component's state at one moment."""

    name: str
    stuck: bool
    # The latest failure's reason while failing, else "".
    reason: str
    # How long it has been failing without progress in between (0 when not failing).
    failing_for_s: float
    since_progress_s: float

    def describe(self) -> str:
        return f"{self.name}: {self.reason} (failing for {self.failing_for_s:.0f}s)"


class ComponentHealth:
    """The handle a component reports through. Cheap enough for every poll:
    two float stores, no lock (a torn read only shifts a gauge by one poll)."""

    def __init__(self, monitor: HealthMonitor, name: str, stuck_after_s: float | None) -> None:
        self.name = name
        self._monitor = monitor
        self._stuck_after_s = stuck_after_s
        self._last_progress = monitor.clock()
        self._failing_since: float | None = None
        self._reason = ""

    @property
    def stuck_after_s(self) -> float:
        return self._stuck_after_s if self._stuck_after_s is not None else self._monitor.stuck_after_s

    def progress(self) -> None:
        """Work was done, or the loop ran fine with nothing to do."""
        self._last_progress = self._monitor.clock()
        self._failing_since = None
        self._reason = ""

    def failing(self, reason: str | BaseException) -> None:
        """The loop hit an error; stuck once this lasts past the threshold
        without a ``progress()`` in between. The latest reason is kept."""
        if self._failing_since is None:
            self._failing_since = self._monitor.clock()
        self._reason = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"

    def status(self, now: float | None = None) -> ComponentStatus:
        now = self._monitor.clock() if now is None else now
        failing_since = self._failing_since
        failing_for = 0.0 if failing_since is None else max(0.0, now - failing_since)
        return ComponentStatus(
            name=self.name,
            stuck=failing_since is not None and failing_for >= self.stuck_after_s,
            reason=self._reason if failing_since is not None else "",
            failing_for_s=failing_for,
            since_progress_s=max(0.0, now - self._last_progress),
        )

    def close(self) -> None:
        """The component stopped: it no longer counts."""
        self._monitor.unregister(self)


class HealthMonitor:
    """The components of one process (or one ServiceRunner in tests)."""

    def __init__(self, *, stuck_after_s: float = 10.0, clock: Clock = time.monotonic) -> None:
        self.stuck_after_s = stuck_after_s
        self.clock = clock
        self._components: dict[str, ComponentHealth] = {}
        self._reported_stuck: set[str] = set()
        # register/unregister may come from other threads (the metrics scrape reads).
        self._lock = threading.Lock()

    def register(self, name: str, stuck_after_s: float | None = None) -> ComponentHealth:
        """A new component; names are made unique ("name#2") so two consumers
        of one group in one process are told apart."""
        with self._lock:
            unique, n = name, 1
            while unique in self._components:
                n += 1
                unique = f"{name}#{n}"
            component = ComponentHealth(self, unique, stuck_after_s)
            self._components[unique] = component
        COMPONENT_STUCK.labels(unique).set_function(lambda: float(component.status().stuck))
        COMPONENT_SECONDS_SINCE_PROGRESS.labels(unique).set_function(
            lambda: component.status().since_progress_s
        )
        return component

    def unregister(self, component: ComponentHealth) -> None:
        with self._lock:
            if self._components.get(component.name) is not component:
                return
            del self._components[component.name]
            self._reported_stuck.discard(component.name)
        for gauge in (COMPONENT_STUCK, COMPONENT_SECONDS_SINCE_PROGRESS):
            with contextlib.suppress(KeyError):  # removed already
                gauge.remove(component.name)

    def statuses(self) -> list[ComponentStatus]:
        now = self.clock()
        with self._lock:
            components = list(self._components.values())
        return [c.status(now) for c in components]

    def check(self) -> list[ComponentStatus]:
        """The stuck components now; logs each component's turn to stuck and
        back once (call it periodically: the readiness poll does)."""
        statuses = self.statuses()
        stuck = [s for s in statuses if s.stuck]
        stuck_names = {s.name for s in stuck}
        with self._lock:
            newly_stuck = stuck_names - self._reported_stuck
            recovered = self._reported_stuck - stuck_names
            self._reported_stuck = stuck_names
        for status in stuck:
            if status.name in newly_stuck:
                log.error("component stuck: %s", status.describe())
        for name in sorted(recovered):
            log.warning("component recovered: %s", name)
        return stuck


def stuck_reason(stuck: list[ComponentStatus]) -> str:
    """One line naming the stuck components, fit for gRPC metadata (printable
    ASCII, bounded)."""
    text = "stuck: " + "; ".join(s.describe() for s in stuck)
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."


@dataclass(frozen=True, slots=True)
class HealthProbe:
    """A grpc.health.v1 Check answer: the status name (SERVING, NOT_SERVING,
    or the gRPC code when there was no answer, e.g. UNAVAILABLE) and why,
    when the server said."""

    status: str
    reason: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


async def probe(channel: grpc.aio.Channel, service: str = "", *, timeout: float = 1.0) -> HealthProbe:
    """Check one server's health over ``channel``, with the reason a platform
    server attaches (``HEALTH_REASON_KEY``) when it is not SERVING."""
    call = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout
    )
    try:
        reply = await call
    except grpc.aio.AioRpcError as exc:
        return HealthProbe(exc.code().name, exc.details() or "")
    trailing = await call.trailing_metadata()
    reason = next((str(v) for k, v in (trailing or ()) if k == HEALTH_REASON_KEY), "")
    return HealthProbe(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), reason)


_default: HealthMonitor | None = None
_default_lock = threading.Lock()


def default_monitor() -> HealthMonitor:
    """The process' monitor: components report here unless given another one,
    and a ServiceRunner drives health from it unless given another one (a
    service process is one service; tests running several in one process may
    give each its own)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = HealthMonitor()
        return _default
