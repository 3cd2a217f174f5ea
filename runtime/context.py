"""The request context of the call being handled, in a contextvar.

The server interceptor builds a :class:`RequestContext` from the verified
context token of the call (``runtime.security.tokens``; never from bare
metadata) and sets it for the duration of the call; servicers read it with
:func:`current_context` / :func:`require_tenant`; the client interceptor
turns it into a context token for the callee and caps outgoing deadlines by
:attr:`RequestContext.deadline`. Background work (event consumers,
schedulers) sets one with :func:`use_context`, acting for a tenant only under
a delegation.

Kept free of gRPC imports so domain code and consumers can use it cheaply.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace

from runtime.errors import UnauthenticatedError


@dataclass(slots=True)
class RequestContext:
    """Who a call acts for and how long it may take. Treat it as read-only
    (derive changed copies with :func:`dataclasses.replace`); it is not frozen
    only because a frozen dataclass costs ~1 us more to build on every call.

    ``deadline`` is absolute on the :func:`time.monotonic` clock (``None``: no
    deadline), so remaining budgets are cheap to compute and immune to wall
    clock jumps.
    """

    tenant_id: str = ""
    subject: str = ""
    correlation_id: str = ""
    idempotency_key: str = ""
    scopes: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    deadline: float | None = None
    # The principal (service identity) whose call this is; "" outside calls.
    caller: str = ""
    # The verified context token this call arrived with: the evidence a
    # service forwards (as a "chain") when it calls on for the same context.
    credential: str = ""
    # A delegation from identity for work a service starts on its own for a
    # tenant (runtime.security.delegations); its scopes bound ``scopes``.
    delegation: str = ""

    def time_remaining(self) -> float | None:
        """Seconds left until the deadline (never negative), or ``None`` without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def with_deadline_in(self, seconds: float | None) -> RequestContext:
        """A copy whose deadline is ``seconds`` from now (``None`` clears it)."""
        return replace(self, deadline=None if seconds is None else time.monotonic() + seconds)


_EMPTY = RequestContext()
_current: ContextVar[RequestContext] = ContextVar("trading_request_context", default=_EMPTY)


def new_correlation_id() -> str:
    """A fresh correlation id (random UUID, text form)."""
    return str(uuid.uuid4())


def current_context() -> RequestContext:
    """The context of the call being handled (an empty one outside any call)."""
    return _current.get()


def require_tenant() -> str:
    """The caller's tenant id; raises :class:`UnauthenticatedError` (-> UNAUTHENTICATED) without one."""
    tenant = _current.get().tenant_id
    if not tenant:
        raise UnauthenticatedError("missing tenant: the call carries no verified tenant context")
    return tenant


def set_context(ctx: RequestContext) -> Token[RequestContext]:
    """Set the current context; returns a token for :func:`reset_context` (hot-path form)."""
    return _current.set(ctx)


def reset_context(token: Token[RequestContext]) -> None:
    """Undo a :func:`set_context`."""
    _current.reset(token)


@contextmanager
def use_context(ctx: RequestContext) -> Iterator[RequestContext]:
    """Run a block (e.g. handling one consumed event) under ``ctx``."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
