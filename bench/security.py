"""What the trust boundary costs per hop, measured in one run (issue 10).

Three servers in a separate process (as the services run), one echo RPC each,
64 raw bytes:

- ``plaintext``: bare grpc.aio, no TLS, no interceptors (the gRPC floor);
- ``mtls``: the same over mutual TLS with the platform's certificates;
- ``mtls+guard``: mutual TLS plus the platform's server interceptor with the
  caller check and context-token verification (runtime.security.guard), the
  client sending a context token minted by the client interceptor, as every
  internal call does.

And in-process, without the network: context-token verification uncached (a
token never seen before: signature, certificate chain, grant) and cached (the
steady state: callers reuse a token for its half-life, callees remember
verified ones), and minting.

    python -m bench.security [--samples N] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench.harness import closed_loop, closed_loop_sync, server_process
from bench.model import Result, measured
from runtime.config import Settings
from runtime.context import RequestContext
from runtime.contracts import METADATA
from runtime.interceptors import ServerCallInterceptor
from runtime.security.credentials import credentials_for
from runtime.security.pki import ensure_pki

PAYLOAD = b"x" * 64
# A real contract method, so the guard applies its real rule (callers: gateway).
METHOD_SERVICE, METHOD_NAME = "trading.marketdata.v1.MarketDataService", "GetInstrument"
METHOD = f"/{METHOD_SERVICE}/{METHOD_NAME}"


def _settings(var_dir: Path) -> Settings:
    return Settings(var_dir=var_dir)


async def _serve(var_dir: Path) -> None:
    settings = _settings(var_dir)
    server_creds = credentials_for(settings, "marketdata")

    def echo(request: bytes, context: Any) -> bytes:
        return request

    async def echo_async(request: bytes, context: Any) -> bytes:
        return request

    ports: dict[str, int] = {}
    servers = []
    for name, secure, guarded in (
        ("plaintext", False, False),
        ("mtls", True, False),
        ("mtls_guard", True, True),
    ):
        interceptors = [ServerCallInterceptor(guard=server_creds.guard)] if guarded else []
        server = grpc.aio.server(interceptors=interceptors)
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            echo_async if guarded else echo
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(METHOD_SERVICE, {METHOD_NAME: handler}),)
        )
        if secure:
            ports[name] = server.add_secure_port("127.0.0.1:0", server_creds.tls.server_credentials())
        else:
            ports[name] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
    print(json.dumps(ports), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        await server.stop(0)


async def _hop(channel: grpc.aio.Channel, metadata: Any, samples: int, warmup: int) -> Any:
    echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)

    async def call() -> None:
        await echo(PAYLOAD, metadata=metadata, timeout=5)

    return await closed_loop(call, samples=samples, warmup=warmup)


async def measure(samples: int, warmup: int, var_dir: Path) -> list[Result]:
    settings = _settings(var_dir)
    ensure_pki(settings.security.pki_path(var_dir), settings.security.trust_domain)
    gateway = credentials_for(settings, "gateway")
    user = RequestContext(
        tenant_id="bench", subject="user-1", scopes=frozenset({"marketdata:read", "orders:write"}),
        roles=frozenset({"TRADER"}),
    )  # fmt: skip
    results: list[Result] = []
    async with server_process("bench.security", "serve", "--var-dir", str(var_dir)) as ports:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['plaintext']}") as channel:
            rec = await _hop(channel, None, samples, warmup)
        results.append(measured("security_hop_plaintext", "", "gRPC hop, plaintext, no interceptors", rec,
                                method="closed loop, 1 channel, 64 B"))  # fmt: skip
        async with gateway.channel(f"127.0.0.1:{ports['mtls']}", "marketdata", [], []) as channel:
            rec = await _hop(channel, None, samples, warmup)
        results.append(measured("security_hop_mtls", "", "gRPC hop over mutual TLS", rec,
                                method="closed loop, 1 channel, 64 B"))  # fmt: skip

        async def with_token(continuation: Any, details: Any, request: Any) -> Any:
            md = grpc.aio.Metadata((METADATA.context_token, gateway.tokens.mint("marketdata", user)))
            return await continuation(
                grpc.aio.ClientCallDetails(details.method, details.timeout, md, None, None), request
            )

        from runtime.grpc_client import per_arity  # the client interceptor shape the platform uses

        address = f"127.0.0.1:{ports['mtls_guard']}"
        async with gateway.channel(address, "marketdata", [], per_arity(with_token, with_token)) as channel:
            rec = await _hop(channel, None, samples, warmup)
        name = "gRPC hop over mutual TLS + caller check + context token (mint, verify)"
        how = "closed loop, 1 channel, 64 B; token reused by the caller, verified once by the callee"
        results.append(measured("security_hop_mtls_token", "", name, rec, method=how))

    # In-process: verification alone.
    marketdata = credentials_for(settings, "marketdata")
    fresh = [gateway.tokens.mint("marketdata", RequestContext(tenant_id="bench", subject=f"u{i}"))
             for i in range(samples + warmup)]  # fmt: skip
    tokens = iter(fresh)
    uncached = closed_loop_sync(
        lambda: marketdata.tokens.verify(next(tokens), "gateway"), samples=samples, warmup=warmup
    )
    how = "in process; ES256 signature + certificate (cached) + grant"
    name = "context token verification, first sight"
    results.append(measured("security_verify_uncached", "", name, uncached, method=how))
    one = fresh[0]
    cached = closed_loop_sync(
        lambda: marketdata.tokens.verify(one, "gateway"), samples=samples, warmup=warmup
    )
    results.append(measured("security_verify_cached", "", "context token verification, seen before", cached,
                            method="in process; the steady state of every hop"))  # fmt: skip
    minted = closed_loop_sync(lambda: gateway.tokens.mint("marketdata", user), samples=samples, warmup=warmup)
    results.append(measured("security_mint_cached", "", "context token for a call (reused)", minted,
                            method="in process"))  # fmt: skip
    return results


def _row(r: Result) -> str:
    lat = r.latency_ms
    return f"| {r.name} | {lat['p50']:.4f} | {lat['p95']:.4f} | {lat['p99']:.4f} | {r.method} |"


def report(results: list[Result]) -> str:
    lines = ["| what | p50 ms | p95 ms | p99 ms | how |", "|---|---:|---:|---:|---|"]
    lines += [_row(r) for r in results if r.has_numbers]
    by = {r.key: r.latency_ms for r in results if r.has_numbers}
    if {"security_hop_plaintext", "security_hop_mtls_token"} <= by.keys():
        plain, full = by["security_hop_plaintext"], by["security_hop_mtls_token"]
        lines.append("")
        lines.append(
            f"Cost of the trust boundary per hop: p50 +{full['p50'] - plain['p50']:.3f} ms, "
            f"p99 +{full['p99'] - plain['p99']:.3f} ms over plaintext."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.security")
    sub = parser.add_subparsers(dest="cmd")
    serve = sub.add_parser("serve")
    serve.add_argument("--var-dir", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(_serve(args.var_dir))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(measure(args.samples, args.warmup, Path(tmp)))
    text = report(results)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "security.json").write_text(json.dumps([r.to_json() for r in results], indent=1))
        (args.out / "security.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
