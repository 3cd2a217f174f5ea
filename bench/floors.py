"""The latency floors, measured in the same run as the paths: what loopback
and the bare libraries cost before any platform code runs.

- raw TCP: a 64-byte echo over asyncio streams (the machinery asyncpg and
  redis-py sit on) to an echo server;
- bare gRPC: a grpc.aio unary call of 64 raw bytes (no protobuf, no
  interceptors) to a minimal grpc.aio server;
- bare NATS: request/reply of 64 bytes through the NATS server to a
  responder (both connected as the test harness user of the benchmark's
  server: the platform's users may not answer requests).

The servers run in a separate process (``python -m bench.floors serve``), as
the platform's services do, so each floor crosses the same process boundary
the paths cross.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from bench.harness import closed_loop, server_process
from bench.model import Result, errored, measured
from runtime.config import Settings, to_env
from runtime.messaging.nats.connect import connect_nats
from runtime.security.nats_permissions import HARNESS

PAYLOAD = b"x" * 64
GRPC_METHOD = "/bench.Floor/Echo"


# ------------------------------------------------------------------------------ server process


async def _serve(subject: str) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
        writer.close()

    tcp = await asyncio.start_server(echo, "127.0.0.1", 0)
    tcp_port = tcp.sockets[0].getsockname()[1]

    def echo_rpc(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(echo_rpc)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Floor", {"Echo": handler}),))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    # Settings (NATS address, var dir with the secrets) from the parent's environment.
    nc = await connect_nats(Settings(), HARNESS, connect_timeout=2)

    async def respond(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=respond)
    await nc.flush()

    print(json.dumps({"tcp_port": tcp_port, "grpc_port": grpc_port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The parent closing our stdin also means "stop" (it died without signalling).
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    eof = asyncio.create_task(reader.read())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({eof, stopped}, return_when=asyncio.FIRST_COMPLETED)
    await nc.close()
    await server.stop(0.5)
    tcp.close()


@dataclass
class FloorServers:
    tcp_port: int
    grpc_port: int
    settings: Settings
    subject: str


@contextlib.asynccontextmanager
async def floor_servers(settings: Settings, subject: str) -> AsyncIterator[FloorServers]:
    """Start the floor servers in their own process; stop it afterwards."""
    env = os.environ | to_env(settings)
    async with server_process(
        "bench.floors", "serve", "--subject", subject, env=env, ready_timeout_s=20
    ) as ports:
        yield FloorServers(ports["tcp_port"], ports["grpc_port"], settings, subject)


# ------------------------------------------------------------------------------ measurements


async def tcp_floor(port: int, samples: int, warmup: int) -> Result:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def round_trip() -> None:
            writer.write(PAYLOAD)
            await reader.readexactly(len(PAYLOAD))

        rec = await closed_loop(round_trip, samples=samples, warmup=warmup)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return measured(
        "floor_tcp", "", "raw TCP round trip (asyncio streams, 64 B echo)", rec,
        method="closed loop, 1 connection",
    )  # fmt: skip


async def grpc_floor(port: int, samples: int, warmup: int) -> Result:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_METHOD)

        async def call() -> None:
            await echo(PAYLOAD, timeout=5)

        rec = await closed_loop(call, samples=samples, warmup=warmup)
    return measured(
        "floor_grpc", "", "bare grpc.aio unary round trip (64 raw bytes, no interceptors)", rec,
        method="closed loop, 1 channel",
    )  # fmt: skip


async def nats_floor(settings: Settings, subject: str, samples: int, warmup: int) -> Result:
    nc = await connect_nats(settings, HARNESS, connect_timeout=2)
    try:

        async def call() -> None:
            await nc.request(subject, PAYLOAD, timeout=5)

        rec = await closed_loop(call, samples=samples, warmup=warmup)
    finally:
        await nc.close()
    return measured(
        "floor_nats", "", "bare NATS request/reply (64 B, core NATS)", rec,
        method="closed loop, 1 connection",
    )  # fmt: skip


async def measure_floors(settings: Settings, subject: str, samples: int, warmup: int) -> list[Result]:
    """All three floors; a floor that fails is reported as an error row."""
    results: list[Result] = []
    async with floor_servers(settings, subject) as servers:
        measures: list[tuple[str, str, Callable[[], Awaitable[Result]]]] = [
            ("floor_tcp", "raw TCP round trip", lambda: tcp_floor(servers.tcp_port, samples, warmup)),
            ("floor_grpc", "bare grpc.aio unary", lambda: grpc_floor(servers.grpc_port, samples, warmup)),
            ("floor_nats", "bare NATS request/reply", lambda: nats_floor(settings, subject, samples, warmup)),
        ]
        for key, name, measure in measures:
            try:
                results.append(await measure())
            except Exception as exc:
                results.append(errored(key, "", name, exc))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floors")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the floor servers until SIGTERM or stdin closes")
    serve.add_argument("--subject", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.subject))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
