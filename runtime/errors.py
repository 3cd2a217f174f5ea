"""Rich gRPC errors in one place: ``google.rpc.Status`` with typed details.

Servers build a :class:`google.rpc.status_pb2.Status` with the helpers here and
either ``raise ServiceError(status)`` (the server interceptor turns it into the
call's status) or ``await abort(context, status)``. Clients (other services, the
gateway, tests) read the details back from a ``grpc.aio.AioRpcError`` with
:func:`error_details`. On the wire the status travels as the standard
``grpc-status-details-bin`` trailer (grpcio-status), so any gRPC client can
decode it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, Protocol

import asyncpg
import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# The trailer carrying the serialized google.rpc.Status (grpcio-status' key).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ServiceError(Exception):
    """An expected failure of a call, carrying the ``google.rpc.Status`` to send."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status

    @property
    def code(self) -> grpc.StatusCode:
        return grpc_code(self.status.code)


class UnauthenticatedError(ServiceError):
    """The call carries no (valid) caller identity, e.g. no tenant."""

    def __init__(self, message: str = "unauthenticated") -> None:
        super().__init__(status(grpc.StatusCode.UNAUTHENTICATED, message))


class CircuitOpenError(grpc.aio.AioRpcError):
    """Raised by the client without touching the network while a breaker is open.

    An ``AioRpcError`` with code UNAVAILABLE, so callers handle it like any
    other unavailable downstream; the subclass lets them tell it apart.
    """

    def __init__(self, target: str, retry_after_s: float) -> None:
        details = f"circuit breaker open for {target}; retry in {retry_after_s:.3f}s"
        st = status(grpc.StatusCode.UNAVAILABLE, details, retry_info(retry_after_s))
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata((STATUS_DETAILS_KEY, st.SerializeToString())),
            details=details,
        )
        self.target = target


_CODES_BY_VALUE: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def grpc_code(value: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a numeric (google.rpc.Code) value; UNKNOWN if out of range."""
    return _CODES_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


def _pack(detail: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def status(code: grpc.StatusCode, message: str, *details: Message) -> status_pb2.Status:
    """A ``google.rpc.Status`` with the given code, message and detail messages."""
    return status_pb2.Status(code=code.value[0], message=message, details=[_pack(d) for d in details])


@dataclass(frozen=True, slots=True)
class _Status(grpc.Status):
    """A ``grpc.Status`` value (grpcio only declares the interface)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


# ---- field violations -------------------------------------------------------------------------


class _ViolationProto(Protocol):
    """The parts of ``buf.validate.Violation`` used here (protovalidate's own message type)."""

    @property
    def field(self) -> Any: ...

    rule_id: str
    message: str


class _ProtovalidateViolation(Protocol):
    @property
    def proto(self) -> Any: ...


def field_path(violation: _ViolationProto) -> str:
    """``buf.validate.FieldPath`` as text: ``legs[0].quantity``, ``labels["env"]``;
    "" for a rule on the whole message (it has no field)."""
    parts: list[str] = []
    if violation.field is None:
        return ""
    for element in violation.field.elements:
        parts.append(("." if parts else "") + element.field_name)
        sub = element.subscript
        if sub is not None:
            value = sub.value
            if isinstance(value, str):
                parts.append(f'["{value}"]')
            elif isinstance(value, bool):
                parts.append("[true]" if value else "[false]")
            else:
                parts.append(f"[{value}]")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad input field, independent of where the check was made."""

    field: str
    description: str
    reason: str = ""


def _to_field_violation(
    v: FieldViolation | _ProtovalidateViolation,
) -> error_details_pb2.BadRequest.FieldViolation:
    if isinstance(v, FieldViolation):
        return error_details_pb2.BadRequest.FieldViolation(
            field=v.field, description=v.description, reason=v.reason
        )
    proto = v.proto
    return error_details_pb2.BadRequest.FieldViolation(
        field=field_path(proto), description=proto.message, reason=proto.rule_id
    )


def invalid_argument(
    violations: Iterable[FieldViolation | _ProtovalidateViolation], message: str = ""
) -> status_pb2.Status:
    """INVALID_ARGUMENT with ``google.rpc.BadRequest`` field violations.

    Accepts protovalidate ``Violation`` objects (field path, message, rule id ->
    field, description, reason) or :class:`FieldViolation` for checks made in code.
    """
    bad = error_details_pb2.BadRequest(field_violations=[_to_field_violation(v) for v in violations])
    if not message:
        fields = ", ".join(fv.field or "<request>" for fv in bad.field_violations)
        message = f"invalid request: {fields}" if fields else "invalid request"
    return status(grpc.StatusCode.INVALID_ARGUMENT, message, bad)


def retry_info(delay_s: float) -> error_details_pb2.RetryInfo:
    """``google.rpc.RetryInfo``: how long the client should wait before trying again."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(0, round(delay_s * 1e9)))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def domain_error(
    code: grpc.StatusCode,
    reason: str,
    domain: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    retry_after_s: float | None = None,
) -> status_pb2.Status:
    """A business-rule failure with ``google.rpc.ErrorInfo`` (stable ``reason`` like
    ``RISK_MAX_NOTIONAL_EXCEEDED``, ``domain`` like ``trading.risk``), plus
    ``RetryInfo`` when waiting helps."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata or {}))
    details: list[Message] = [info]
    if retry_after_s is not None:
        details.append(retry_info(retry_after_s))
    return status(code, message, *details)


def to_grpc_status(
    st: status_pb2.Status, extra_trailing: Sequence[tuple[str, str | bytes]] = ()
) -> grpc.Status:
    """The ``grpc.Status`` to end a call with, keeping ``extra_trailing`` metadata."""
    converted: grpc.Status = rpc_status.to_status(st)
    if not extra_trailing:
        return converted
    return _Status(
        code=converted.code,
        details=converted.details,
        trailing_metadata=(*extra_trailing, *converted.trailing_metadata),
    )


async def abort(context: grpc.aio.ServicerContext[Any, Any], st: status_pb2.Status) -> NoReturn:
    """End the call with ``st`` (details in the status trailer), keeping trailing
    metadata already set on the call (e.g. the echoed correlation id)."""
    kept = tuple((k, v) for k, v in (context.trailing_metadata() or ()) if k != STATUS_DETAILS_KEY)
    await context.abort_with_status(to_grpc_status(st, kept))
    raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover


# ---- a dependency (PostgreSQL) that is down --------------------------------------------------

# ErrorInfo domain of "a dependency of the service is unreachable". Clients'
# breakers count these as failures (runtime.grpc_client): unlike a domain
# reason about one request, an outage fails every caller alike.
DEPENDENCY_DOMAIN: Final = "trading.dependency"
# What the client is told to wait: a PostgreSQL restart or failover takes about
# a second, and the pool reconnects on the next call after that.
DEPENDENCY_RETRY_AFTER_S: Final = 1.0

# Network errnos of a connect or a connection that broke: what asyncpg raises
# as a bare OSError when PostgreSQL is not listening (several addresses tried).
_NETWORK_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
     errno.ENETUNREACH, errno.ETIMEDOUT, errno.EPIPE}
)  # fmt: skip


def _any(_exc: BaseException) -> bool:
    return True


def _closed_connection(exc: BaseException) -> bool:
    # asyncpg.InterfaceError is also raised for misuse (a bug: "another
    # operation is in progress"); only a closed connection or pool is an outage.
    text = str(exc)
    return "closed" in text or "closing" in text


def _network_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return True
    # asyncio's "Multiple exceptions: [Errno 111] Connect call failed ..." has no errno.
    return "Connect call failed" in str(exc)


@dataclass(frozen=True, slots=True)
class DependencyFailure:
    """A row of :data:`UNAVAILABLE_ERRORS`: exceptions of these ``kinds`` that
    ``match`` become UNAVAILABLE with ErrorInfo ``reason`` and ``message``."""

    kinds: tuple[type[BaseException], ...]
    reason: str
    message: str
    match: Callable[[BaseException], bool] = _any


# The errors that say "the database (or another server we connect to) is down
# or restarting", not "this request is bad" nor "this code is wrong". The
# server interceptor answers them with UNAVAILABLE + ErrorInfo + RetryInfo, so
# callers retry and the gateway says 503 with Retry-After, instead of UNKNOWN
# and 500 (which tell a client that retrying will not help). First match wins.
UNAVAILABLE_ERRORS: Final[tuple[DependencyFailure, ...]] = (
    # SQLSTATE class 08, e.g. ConnectionDoesNotExistError ("connection was
    # closed in the middle of operation") when PostgreSQL went away mid-query.
    DependencyFailure((asyncpg.PostgresConnectionError,), "DATABASE_CONNECTION_LOST",
                      "the connection to the database was lost"),
    # 57P01..57P03: shut down by an operator, crashed, or still starting up.
    DependencyFailure((asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.CannotConnectNowError),
                      "DATABASE_RESTARTING", "the database is restarting"),
    # 53300 and the like: the server is out of connection slots.
    DependencyFailure((asyncpg.TooManyConnectionsError,), "DATABASE_BUSY", "the database is busy"),
    DependencyFailure((asyncpg.InterfaceError,), "DATABASE_CONNECTION_LOST",
                      "the connection to the database was lost", _closed_connection),
    # Connecting failed: nothing listens (refused), or the connection broke.
    DependencyFailure((ConnectionError, OSError), "DEPENDENCY_UNREACHABLE",
                      "a server the service depends on is unreachable", _network_failure),
    # asyncpg's pool acquire / connect timeouts (and a query past command_timeout).
    DependencyFailure((TimeoutError,), "DEPENDENCY_TIMEOUT",
                      "a server the service depends on did not answer in time"),
)  # fmt: skip


def dependency_unavailable(exc: BaseException) -> status_pb2.Status | None:
    """UNAVAILABLE with ErrorInfo (domain :data:`DEPENDENCY_DOMAIN`) and RetryInfo
    when `exc`, or an exception it was raised from, is a row of
    :data:`UNAVAILABLE_ERRORS`; None otherwise (a bug stays UNKNOWN). The
    message is the row's, never the exception's text (it names hosts and ports)."""
    seen: BaseException | None = exc
    for _ in range(5):  # explicit `raise ... from` chains, bounded
        if seen is None:
            return None
        for row in UNAVAILABLE_ERRORS:
            if isinstance(seen, row.kinds) and row.match(seen):
                return domain_error(
                    grpc.StatusCode.UNAVAILABLE,
                    row.reason,
                    DEPENDENCY_DOMAIN,
                    row.message,
                    {"error": type(seen).__name__},
                    retry_after_s=DEPENDENCY_RETRY_AFTER_S,
                )
        seen = seen.__cause__
    return None


# ---- reading errors on the client -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What a failed call said, decoded from its status trailer."""

    code: grpc.StatusCode
    message: str
    field_violations: list[error_details_pb2.BadRequest.FieldViolation] = field(default_factory=list)
    error_info: error_details_pb2.ErrorInfo | None = None
    retry_delay_s: float | None = None
    status: status_pb2.Status | None = None

    @property
    def violated_fields(self) -> list[str]:
        return [v.field for v in self.field_violations]


def rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` a failed call carried, if any."""
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


_BAD_REQUEST = error_details_pb2.BadRequest.DESCRIPTOR.full_name
_ERROR_INFO = error_details_pb2.ErrorInfo.DESCRIPTOR.full_name
_RETRY_INFO = error_details_pb2.RetryInfo.DESCRIPTOR.full_name


def error_details(err: grpc.aio.AioRpcError) -> ErrorDetails:
    """Decode BadRequest, ErrorInfo and RetryInfo from a client-side error."""
    st = rich_status(err)
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    info: error_details_pb2.ErrorInfo | None = None
    delay: float | None = None
    if st is not None:
        for detail in st.details:
            kind = detail.TypeName()
            if kind == _BAD_REQUEST:
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(bad.field_violations)
            elif kind == _ERROR_INFO:
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif kind == _RETRY_INFO:
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                delay = retry.retry_delay.ToNanoseconds() / 1e9
    return ErrorDetails(
        code=err.code(),
        message=err.details() or "",
        field_violations=violations,
        error_info=info,
        retry_delay_s=delay,
        status=st,
    )
