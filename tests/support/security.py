"""Calling secured services from tests, the way real callers do.

A test that calls a service directly plays a real principal (by default the
gateway, the edge that turns a user into a tenant context): it dials with
that principal's certificate from the session's local PKI and sends a context
token that principal signed for the callee. Nothing here bypasses a check.

    channel = secure_channel(settings, address, "execution")
    await stub.PlaceOrder(req, metadata=as_user(settings, "execution", tenant))

Tests on the session's servers can leave ``settings`` out: ``service_channel``
and ``user_md`` use the session's (set by the ``infra_settings`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
import grpc.aio

from runtime.config import Settings, grpc_target
from runtime.context import RequestContext
from runtime.contracts import METADATA, method_policy, services
from runtime.grpc_client import balancing_options
from runtime.security.credentials import credentials_for


def all_scopes() -> frozenset[str]:
    """Every scope some RPC of the contract asks for (a fully privileged user)."""
    return frozenset(
        scope
        for svc in services()
        for method in svc.methods
        for scope in method_policy(f"/{svc.full_name}/{method.name}").scopes
    )


def secure_channel(
    settings: Settings,
    address: str,
    service: str,
    *,
    principal: str = "gateway",
    interceptors: Iterable[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A mutual-TLS channel to ``service`` at ``address``, as ``principal``;
    an address listing several replicas ("a:1,b:2") is balanced over them as
    the services' own clients do (round_robin, health-checked)."""
    options: list[tuple[str, object]] = [*balancing_options(settings.client)] if "," in address else []
    return credentials_for(settings, principal).channel(
        grpc_target(address), service, options, list(interceptors)
    )


def context_token(
    settings: Settings,
    audience: str,
    tenant: str = "",
    *,
    principal: str = "gateway",
    subject: str = "user-test",
    scopes: Iterable[str] | None = None,
    roles: Iterable[str] = ("ADMIN",),
    delegation: str = "",
) -> str:
    """A context token ``principal`` made for ``audience`` (all scopes unless given)."""
    ctx = RequestContext(
        tenant_id=tenant,
        subject=subject if tenant else "",
        scopes=frozenset(all_scopes() if scopes is None else scopes) if tenant else frozenset(),
        roles=frozenset(roles) if tenant else frozenset(),
        delegation=delegation,
    )
    return credentials_for(settings, principal).tokens.mint(audience, ctx)


def as_user(
    settings: Settings,
    audience: str,
    tenant: str,
    *,
    principal: str = "gateway",
    subject: str = "user-test",
    scopes: Iterable[str] | None = None,
    roles: Iterable[str] = ("ADMIN",),
    correlation_id: str = "",
) -> tuple[tuple[str, str], ...]:
    """Call metadata acting for ``tenant`` (a user the gateway verified)."""
    token = context_token(
        settings, audience, tenant, principal=principal, subject=subject, scopes=scopes, roles=roles
    )
    md: tuple[tuple[str, str], ...] = ((METADATA.context_token, token),)
    if correlation_id:
        md += ((METADATA.correlation_id, correlation_id),)
    return md


def as_service(
    settings: Settings, audience: str, *, principal: str = "gateway"
) -> tuple[tuple[str, str], ...]:
    """Call metadata with no tenant: ``principal`` acting as itself."""
    return ((METADATA.context_token, context_token(settings, audience, principal=principal)),)


_session: list[Settings] = []


def use_session_settings(settings: Settings) -> None:
    """Called once by the ``infra_settings`` fixture."""
    _session[:] = [settings]


def session_settings() -> Settings:
    if not _session:
        raise RuntimeError("no test session settings: use the infra_settings fixture")
    return _session[0]


def service_channel(address: str, service: str, *, principal: str = "gateway") -> grpc.aio.Channel:
    """:func:`secure_channel` with the session's settings."""
    return secure_channel(session_settings(), address, service, principal=principal)


def user_md(audience: str, tenant: str, **options: Any) -> tuple[tuple[str, str], ...]:
    """:func:`as_user` with the session's settings (same keyword options)."""
    return as_user(session_settings(), audience, tenant, **options)
