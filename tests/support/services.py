"""Run one service in the test's own process, on a spare port, with the same
wiring as its `python -m services.<name>` entry point (its ServiceSpec) and
real dependencies."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from gateway.routes import build_routes
from runtime.config import Settings
from runtime.contracts import default_pool
from runtime.grpc_server import ServiceRunner
from runtime.resources import Resources
from runtime.service import ServiceSpec, fill_unimplemented


@asynccontextmanager
async def running_service(spec: ServiceSpec, settings: Settings) -> AsyncIterator[str]:
    """Yields the "host:port" of the running service; stops it (and closes its
    resources) afterwards."""
    resources = Resources.for_service(settings, spec.name, spec.needs)
    await resources.open(timeout_s=20)
    try:
        servicers = await spec.build(resources)
    except BaseException:
        await resources.close()
        raise
    pool = default_pool()

    def register(server: grpc.aio.Server) -> list[str]:
        for name, add_to_server in spec.apis:
            fill_unimplemented(servicers[name], pool.FindServiceByName(name))
            add_to_server(servicers[name], server)
        return [name for name, _ in spec.apis]

    runner = ServiceRunner(
        spec.name,
        settings,
        register,
        ready_check=resources.ready,
        cleanup=resources.close,
        address="127.0.0.1:0",
        metrics_port=-1,
    )
    await runner.start()
    try:
        await runner.wait_ready()
        yield f"127.0.0.1:{runner.port}"
    finally:
        await runner.stop()


def unbuilt_methods() -> set[tuple[str, str]]:
    """(service, RPC) pairs that no servicer implements yet: they answer 501
    NOT_BUILT_YET by design (runtime.service.fill_unimplemented), so fuzzing
    leaves them out. Read from the servicer classes, as the server does."""
    unbuilt: set[tuple[str, str]] = set()
    for route in build_routes():
        api = importlib.import_module(f"services.{route.target}.api")
        classes = [c for name, c in vars(api).items() if name.endswith("Api") and inspect.isclass(c)]
        name = route.method.name
        handler = next((getattr(c, name) for c in classes if hasattr(c, name)), None)
        if not (inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler)):
            unbuilt.add((route.target, name))
    return unbuilt
