"""What every path function gets (:class:`Context`), and how the benchmark
calls the platform's services directly.

Every gRPC port is mutual TLS and every call needs a context token
(docs/security.md), so a direct call plays a real principal with the run's
local PKI (``<var_dir>/pki``, made by the supervisor before the services
start): the gateway acting for a user it verified (grant "edge"), or, for
risk.CheckOrder, execution calling on with the token it received from the
gateway (grant "chain"), exactly as inside PlaceOrder. Tokens are minted per
call: the minting side caches them for half their lifetime, as real callers
do, so a long closed loop never sends an expired one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc.aio

from bench.modes import Mode
from bench.stack import Stack
from runtime.config import Settings
from runtime.context import RequestContext
from runtime.contracts import METADATA
from runtime.security.credentials import credentials_for

Metadata = tuple[tuple[str, str], ...]
GATEWAY = "gateway"
BENCH_SUBJECT = "user-bench"


@dataclass
class Context:
    """What every path function gets."""

    stack: Stack
    mode: Mode
    work_dir: Path  # scratch space of this run (chdb data)

    @property
    def run_id(self) -> str:
        return self.stack.run_id


def channel(settings: Settings, service: str, principal: str = GATEWAY) -> grpc.aio.Channel:
    """A bare mutual-TLS channel (no client interceptors) to ``service`` as ``principal``."""
    return credentials_for(settings, principal).channel(settings.dial_target(service), service, [], [])


def user_context(tenant: str, scopes: Iterable[str]) -> RequestContext:
    """The context the gateway builds for a verified user of ``tenant``."""
    return RequestContext(
        tenant_id=tenant, subject=BENCH_SUBJECT, scopes=frozenset(scopes), roles=frozenset({"TRADER"})
    )


def as_user(settings: Settings, audience: str, tenant: str, scopes: Iterable[str]) -> Metadata:
    """Metadata of a call to ``audience`` by the gateway for a user of ``tenant``."""
    token = credentials_for(settings, GATEWAY).tokens.mint(audience, user_context(tenant, scopes))
    return ((METADATA.context_token, token),)


def as_execution_for_user(settings: Settings, tenant: str, scopes: Iterable[str]) -> Metadata:
    """Metadata of execution's call to risk while it handles a user's PlaceOrder:
    the gateway's token for execution, verified by execution (as its server
    does), chained into one for risk."""
    user = user_context(tenant, scopes)
    execution = credentials_for(settings, "execution").tokens
    received = credentials_for(settings, GATEWAY).tokens.mint("execution", user)
    execution.verify(received, GATEWAY)
    token = execution.mint("risk", replace(user, credential=received))
    return ((METADATA.context_token, token),)
