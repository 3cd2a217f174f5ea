"""What every service's entry point does, written once.

A service describes itself with a `ServiceSpec`: its name, the dependencies it
needs, the gRPC services it serves, and a `build` function that turns opened
`Resources` into servicers. `run_service(spec)` then starts the gRPC server at
once (health NOT_SERVING; a `ServicerGate` stands in for each servicer), opens
the dependencies with retries (migrations included), builds the servicers,
and lets health turn SERVING. RPCs a
servicer does not implement yet answer UNIMPLEMENTED with an explicit
`NOT_BUILT_YET` reason, never a made-up success.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import uvloop
from google.protobuf import descriptor

from runtime import grpc_server
from runtime.config import Settings, get_settings
from runtime.contracts import default_pool
from runtime.errors import ServiceError, domain_error, retry_info, status
from runtime.resources import Dependency, Resources

log = logging.getLogger(__name__)


AddToServer = Callable[[Any, grpc.aio.Server], None]


@dataclass(frozen=True)
class ServiceSpec:
    """How one service process is put together."""

    name: str
    needs: Sequence[Dependency]
    # The gRPC services it serves: (full service name, generated add_..._to_server).
    apis: Sequence[tuple[str, AddToServer]]
    # Builds the servicers (by full service name) once the dependencies are open.
    # Consumers and background tasks it starts are registered with
    # `resources.on_close(...)`, so they stop before the connections close.
    build: Callable[[Resources], Awaitable[Mapping[str, Any]]]


class ServicerGate:
    """Stands in for a servicer from server start until the real one is built.

    grpc.aio needs every service registered before the server starts, but the
    servicers need open connections. The gate is registered at once, so health
    and reflection answer while dependencies come up; calls arriving before the
    servicer exists get UNAVAILABLE with a retry hint. One extra frame per call.
    """

    def __init__(self, service: descriptor.ServiceDescriptor) -> None:
        self.service = service
        self.target: Any = None
        for method in service.methods:
            setattr(self, method.name, self._forwarder(method))

    def _forwarder(self, method: descriptor.MethodDescriptor) -> Callable[..., Any]:
        name = method.name
        starting = status(grpc.StatusCode.UNAVAILABLE, f"{self.service.name} is starting", retry_info(0.5))

        if method.server_streaming:

            async def forward_stream(request: Any, context: Any) -> Any:
                if self.target is None:
                    raise ServiceError(starting)
                async for item in getattr(self.target, name)(request, context):
                    yield item

            return forward_stream

        async def forward(request: Any, context: Any) -> Any:
            if self.target is None:
                raise ServiceError(starting)
            return await getattr(self.target, name)(request, context)

        return forward


def fill_unimplemented(servicer: Any, service: descriptor.ServiceDescriptor, issue: str = "") -> list[str]:
    """Give every RPC of `service` that the servicer does not implement (as an
    async method) a handler answering UNIMPLEMENTED with ErrorInfo reason
    NOT_BUILT_YET. Returns their names.

    Servicers are plain classes with one async method per built RPC; they do not
    subclass the generated XxxServicer, whose placeholders are *sync* methods
    raising NotImplementedError (grpc.aio cannot run them) and which the type
    stubs mark abstract.
    """
    missing: list[str] = []
    for method in service.methods:
        handler = getattr(servicer, method.name, None)
        if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
            continue
        missing.append(method.name)
        setattr(servicer, method.name, _unimplemented(service.full_name, method.name, issue))
    return missing


def _unimplemented(service: str, method: str, issue: str) -> Callable[..., Any]:
    status = domain_error(
        grpc.StatusCode.UNIMPLEMENTED,
        "NOT_BUILT_YET",
        "trading.platform",
        f"{service}/{method} is declared in the contract but not built yet"
        + (f" ({issue})" if issue else ""),
    )

    if method_is_streaming(service, method):

        async def stream_handler(request: Any, context: Any) -> Any:
            raise ServiceError(status)
            yield  # pragma: no cover - makes this an async generator

        return stream_handler

    async def unary_handler(request: Any, context: Any) -> Any:
        raise ServiceError(status)

    return unary_handler


def method_is_streaming(service: str, method: str) -> bool:
    return bool(default_pool().FindMethodByName(f"{service}.{method}").server_streaming)


async def serve_spec(spec: ServiceSpec, settings: Settings | None = None) -> None:
    """Run one service until SIGTERM/SIGINT."""
    settings = settings or get_settings()
    resources = Resources.for_service(settings, spec.name, spec.needs)
    pool = default_pool()
    gates = {name: ServicerGate(pool.FindServiceByName(name)) for name, _ in spec.apis}

    def register(server: grpc.aio.Server) -> list[str]:
        for name, add_to_server in spec.apis:
            add_to_server(gates[name], server)
        return list(gates)

    async def start_up() -> None:
        await resources.open()
        servicers = await spec.build(resources)
        for name, gate in gates.items():
            servicer = servicers[name]
            not_built = fill_unimplemented(servicer, gate.service)
            if not_built:
                log.info("%s: not built yet (UNIMPLEMENTED): %s", gate.service.name, ", ".join(not_built))
            gate.target = servicer
        freeze_startup_heap()

    startup = asyncio.create_task(start_up())

    async def ready() -> bool:
        if not startup.done():
            return False
        if startup.exception() is not None:
            raise startup.exception()  # type: ignore[misc]  # startup failed for good: stop the process
        return await resources.ready()

    async def cleanup() -> None:
        startup.cancel()
        await resources.close()

    await grpc_server.serve(
        spec.name, settings=settings, register=register, ready_check=ready, cleanup=cleanup
    )


def freeze_startup_heap() -> None:
    """Move what start-up made (modules, descriptors, pools, caches: the
    gateway had ~130,000 objects) out of the cyclic collector's sight. It lives
    as long as the process; left in, every full collection scans it again, tens
    of milliseconds (far more on a busy machine) paid by every call in flight
    at that moment."""
    gc.collect()
    gc.freeze()


def run_service(spec: ServiceSpec) -> None:
    """The `main()` of a service process, on uvloop (a faster event loop: every
    service spends much of its time in socket I/O and callbacks)."""
    uvloop.run(serve_spec(spec))
