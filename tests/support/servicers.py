"""Calling a servicer directly in a unit test: no gRPC server, no network.

A service's servicer (``services/<name>/api.py``) is a plain class whose
methods take a request and a ``grpc.aio.ServicerContext`` and read the caller
from :mod:`runtime.context` (set in production by the server interceptor,
after it verified the peer's certificate and the signed context token). A
servicer test builds the servicer on the service's in-memory adapters
(``services/<name>/adapters/memory.py``), then calls it under
:func:`as_caller`. What the interceptors do (authentication, authorization per
RPC, validation, error mapping) is tested against real servers elsewhere
(``tests/security``, ``tests/contract``); here a refused call surfaces as the
:class:`runtime.errors.ServiceError` the interceptor would map, which
:func:`expect_error` checks.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar, cast

import grpc
import pytest

from runtime.context import RequestContext, use_context
from runtime.errors import ServiceError

T = TypeVar("T")


class ServicerContext:
    """The parts of ``grpc.aio.ServicerContext`` servicers use, recorded.

    Not a stand-in for a server: it carries call metadata in and trailing
    metadata out, and :meth:`abort` raises like grpc's does."""

    def __init__(self, metadata: Sequence[tuple[str, str]] = (), *, timeout_s: float | None = None) -> None:
        self._metadata = tuple(metadata)
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._trailing: tuple[tuple[str, Any], ...] = ()
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None
        self._cancelled = False

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def cancel(self) -> None:
        """What a client hanging up does to a streaming call."""
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._cancelled

    def peer(self) -> str:
        return "unit-test"

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        self.code, self.details = code, details
        raise AbortedCall(code, details)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        """What :func:`runtime.errors.abort` calls (rich status in the trailers)."""
        self._trailing = tuple(status.trailing_metadata or ())
        await self.abort(status.code, status.details)


def servicer_context(
    metadata: Sequence[tuple[str, str]] = (), *, timeout_s: float | None = None
) -> grpc.aio.ServicerContext[Any, Any]:
    """A :class:`ServicerContext`, typed as the servicer methods' parameter is."""
    return cast("grpc.aio.ServicerContext[Any, Any]", ServicerContext(metadata, timeout_s=timeout_s))


class AbortedCall(Exception):
    """What :meth:`ServicerContext.abort` raises (grpc raises its own internal error)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self.details = details

    @property
    def code(self) -> grpc.StatusCode:
        """The status, as :attr:`runtime.errors.ServiceError.code` names it."""
        return self._code


@contextmanager
def as_caller(
    tenant_id: str = "tenant-a",
    *,
    caller: str = "gateway",
    subject: str = "user-1",
    scopes: Sequence[str] = (),
    roles: Sequence[str] = (),
    idempotency_key: str = "",
    correlation_id: str = "corr-unit",
    timeout_s: float | None = 5.0,
) -> Iterator[RequestContext]:
    """Run the block as the interceptor would after verifying this caller:
    ``caller`` is the peer's service identity, the rest came from its signed token."""
    ctx = RequestContext(
        tenant_id=tenant_id,
        subject=subject,
        correlation_id=correlation_id,
        idempotency_key=idempotency_key,
        scopes=frozenset(scopes),
        roles=frozenset(roles),
        caller=caller,
    ).with_deadline_in(timeout_s)
    with use_context(ctx):
        yield ctx


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode) -> ServiceError | AbortedCall:
    """Await ``call``; it must fail with ``code``, raised as the ServiceError the
    interceptor maps or ended through ``context.abort`` (returned for more checks)."""
    with pytest.raises((ServiceError, AbortedCall)) as raised:
        await call
    error = raised.value
    assert isinstance(error, ServiceError | AbortedCall)
    got = error.code
    assert got == code, f"{got.name} != {code.name}: {error}"
    return error
