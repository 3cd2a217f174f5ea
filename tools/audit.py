"""`tradingctl audit`: event-sourced checks of a tenant against the audit store.

    tradingctl audit replay --tenant TENANT [--aggregate orders|positions] [--max-differences N]
    tradingctl audit verify --tenant TENANT [--from N] [--to N]

Both call the running audit service (its gRPC address from the settings, or
--address) over mutual TLS as the ``operator`` principal, with a context token
the operator signs for the tenant (the operator CLI is an edge principal, like
the gateway: docs/security.md). `replay` rebuilds the tenant's
orders and positions from the stored events alone and compares them with
execution and portfolio; it prints every difference and exits 0 when there is
none, 1 when there are differences (2 on errors). `verify` checks the
tenant's hash chain and exits 1 when it is broken.

Both can take a while on a long history: while the call runs, a line on
stderr shows the time elapsed (on a terminal only; the service reports no
finer progress).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import grpc
from tqdm import tqdm
from trading.audit.v1 import audit_service_pb2 as pb
from trading.audit.v1 import audit_service_pb2_grpc as pb_grpc
from trading.audit.v1 import types_pb2 as types

from runtime.config import Settings, get_settings
from runtime.context import RequestContext
from runtime.contracts import METADATA
from runtime.errors import error_details
from runtime.security.credentials import PrincipalCredentials, credentials_for
from runtime.security.principals import OPERATOR

AUDIENCE = "audit"
_AGGREGATES = {"orders": types.REPLAY_AGGREGATE_ORDERS, "positions": types.REPLAY_AGGREGATE_POSITIONS}


_SCOPES = frozenset({"audit:read", "admin"})


def _metadata(credentials: PrincipalCredentials, tenant: str) -> tuple[tuple[str, str], ...]:
    """A context token the operator signs for audit: tenant, the operator as
    subject, the scopes the audit RPCs ask for."""
    ctx = RequestContext(tenant_id=tenant, subject="tradingctl", scopes=_SCOPES, roles=frozenset({"ADMIN"}))
    return ((METADATA.context_token, credentials.tokens.mint(AUDIENCE, ctx)),)


@contextlib.asynccontextmanager
async def elapsed(desc: str, *, tick_s: float = 0.5) -> AsyncIterator[None]:
    """While the block runs, `desc` and the time elapsed on stderr, redrawn
    every `tick_s`; nothing when stderr is not a terminal (tqdm's
    ``disable=None``), and the line is cleared at the end."""
    bar = tqdm(desc=desc, bar_format="{desc}: {elapsed}", file=sys.stderr, disable=None, leave=False)
    ticker: asyncio.Task[None] | None = None
    if not bar.disable:

        async def tick() -> None:
            while True:
                await asyncio.sleep(tick_s)
                bar.refresh()

        ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        bar.close()


def _print_replay(tenant: str, reply: pb.ReplayTenantResponse) -> None:
    verdict = "consistent" if reply.consistent else f"{len(reply.differences)} difference(s)"
    print(
        f"tenant {tenant}: {verdict}; {reply.events_replayed} events replayed up to sequence "
        f"{reply.up_to_sequence}; {reply.orders_compared} orders, "
        f"{reply.positions_compared} positions compared"
    )
    for d in reply.differences:
        kind = types.DifferenceKind.Name(d.kind).removeprefix("DIFFERENCE_KIND_")
        where = f"{d.aggregate_type} {d.aggregate_id}" + (f" {d.field}" if d.field else "")
        print(f"  {kind:<17} {where}: replayed={d.replayed_value or '-'} live={d.live_value or '-'}")
    if reply.truncated:
        print("  ... more differences (raise --max-differences)")


async def _replay(
    stub: pb_grpc.AuditServiceAsyncStub, md: tuple[tuple[str, str], ...], args: argparse.Namespace
) -> int:
    request = pb.ReplayTenantRequest(
        aggregates=[_AGGREGATES[a] for a in args.aggregate or ()], max_differences=args.max_differences
    )
    async with elapsed(f"replaying tenant {args.tenant}"):
        reply: pb.ReplayTenantResponse = await stub.ReplayTenant(request, metadata=md, timeout=args.timeout)
    _print_replay(args.tenant, reply)
    return 0 if reply.consistent else 1


async def _verify(
    stub: pb_grpc.AuditServiceAsyncStub, md: tuple[tuple[str, str], ...], args: argparse.Namespace
) -> int:
    request = pb.VerifyChainRequest(from_sequence=args.from_sequence, to_sequence=args.to_sequence)
    async with elapsed(f"verifying tenant {args.tenant}"):
        reply: pb.VerifyChainResponse = await stub.VerifyChain(request, metadata=md, timeout=args.timeout)
    print(
        f"tenant {args.tenant}: {'ok' if reply.ok else 'BROKEN'}; {reply.records_checked} records checked "
        f"({reply.first_sequence}..{reply.last_sequence}), last hash {reply.last_hash.hex() or '-'}"
    )
    if not reply.ok:
        b = reply.first_break
        reason = types.ChainBreakReason.Name(b.reason).removeprefix("CHAIN_BREAK_REASON_")
        print(f"  first break at sequence {b.sequence} ({reason}): {b.message}")
    return 0 if reply.ok else 1


def main(argv: list[str], settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradingctl audit", description=__doc__)
    parser.add_argument("--address", help="audit service host:port (default: from the settings)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds the call may take")
    sub = parser.add_subparsers(dest="action", required=True)
    replay = sub.add_parser("replay", help="rebuild a tenant's orders and positions and compare with live")
    replay.add_argument("--tenant", required=True)
    replay.add_argument("--aggregate", action="append", choices=sorted(_AGGREGATES), help="default: both")
    replay.add_argument("--max-differences", type=int, default=0, help="0 means the service default (100)")
    replay.set_defaults(run=_replay)
    verify = sub.add_parser("verify", help="verify a tenant's hash chain")
    verify.add_argument("--tenant", required=True)
    verify.add_argument("--from", dest="from_sequence", type=int, default=0)
    verify.add_argument("--to", dest="to_sequence", type=int, default=0)
    verify.set_defaults(run=_verify)
    args = parser.parse_args(argv)
    settings = settings or get_settings()
    address = args.address or settings.address_of(AUDIENCE)
    credentials = credentials_for(settings, OPERATOR)

    async def run() -> int:
        async with credentials.channel(address, AUDIENCE, [], []) as channel:
            md = _metadata(credentials, args.tenant)
            rc: int = await args.run(pb_grpc.AuditServiceStub(channel), md, args)
            return rc

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as err:
        details = error_details(err)
        fields = ", ".join(f"{v.field}: {v.description}" for v in details.field_violations)
        suffix = f" ({fields})" if fields else ""
        print(f"audit {args.action}: {err.code().name} {details.message}{suffix}", file=sys.stderr)
        return 2
