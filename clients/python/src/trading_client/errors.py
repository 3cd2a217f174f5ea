"""Typed errors of the trading platform, built from the google.rpc.Status the
edge sends in ``grpc-status-details-bin`` (ErrorInfo, BadRequest, RetryInfo).

Every client call raises a :class:`TradingError` subclass instead of
``grpc.RpcError``: one class per gRPC status code (:data:`ERROR_CLASSES`), so
``except NotFound:`` reads like the contract's documentation. The original
``grpc.RpcError`` is kept as ``__cause__``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import grpc
from google.protobuf import message as protobuf_message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from trading_client.methods import CORRELATION_ID_KEY

__all__ = [
    "ERROR_CLASSES",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "TradingError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_class",
    "from_rpc_error",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request (google.rpc.BadRequest), e.g.
    ``FieldViolation("quantity", "must be greater than zero", "decimal.positive")``."""

    field: str
    description: str
    reason: str = ""


class TradingError(Exception):
    """A call the platform refused or could not complete.

    ``code``: the gRPC status code; ``message``: the status message;
    ``reason``/``domain``/``metadata``: the google.rpc.ErrorInfo (e.g.
    ``"RISK_MAX_NOTIONAL_EXCEEDED"``, ``"trading.risk"``); ``field_violations``:
    the google.rpc.BadRequest; ``retry_after``: seconds from google.rpc.RetryInfo
    (None when the server gave none); ``details``: every detail message unpacked;
    ``correlation_id``: the request's id in the platform's logs and traces."""

    #: The status code of this class (TradingError itself: any).
    CODE: ClassVar[grpc.StatusCode | None] = None

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_after: float | None = None,
        *,
        details: Sequence[protobuf_message.Message] = (),
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.retry_after = retry_after
        self.details: tuple[protobuf_message.Message, ...] = tuple(details)
        self.correlation_id = correlation_id

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        extra = [f"reason={self.reason}"] if self.reason else []
        extra += [f"{v.field}: {v.description}" for v in self.field_violations]
        if self.retry_after is not None:
            extra.append(f"retry after {self.retry_after:g}s")
        return f"{text} ({'; '.join(extra)})" if extra else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r}, reason={self.reason!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions cross process boundaries (multiprocessing, concurrent.futures) by pickling.
        args = (
            self.code,
            self.message,
            self.reason,
            self.domain,
            dict(self.metadata),
            self.field_violations,
            self.retry_after,
        )
        return (_rebuild, (type(self), args, self.correlation_id))


def _rebuild(cls: type[TradingError], args: tuple[Any, ...], correlation_id: str | None) -> TradingError:
    return cls(*args, correlation_id=correlation_id)


class Cancelled(TradingError):
    CODE = grpc.StatusCode.CANCELLED


class Unknown(TradingError):
    CODE = grpc.StatusCode.UNKNOWN


class InvalidArgument(TradingError):
    CODE = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(TradingError):
    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(TradingError):
    CODE = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TradingError):
    CODE = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(TradingError):
    CODE = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(TradingError):
    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(TradingError):
    CODE = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(TradingError):
    CODE = grpc.StatusCode.ABORTED


class OutOfRange(TradingError):
    CODE = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(TradingError):
    CODE = grpc.StatusCode.UNIMPLEMENTED


class Internal(TradingError):
    CODE = grpc.StatusCode.INTERNAL


class Unavailable(TradingError):
    CODE = grpc.StatusCode.UNAVAILABLE


class DataLoss(TradingError):
    CODE = grpc.StatusCode.DATA_LOSS


class Unauthenticated(TradingError):
    CODE = grpc.StatusCode.UNAUTHENTICATED


#: The one table from status code to class: every code but OK.
ERROR_CLASSES: Mapping[grpc.StatusCode, type[TradingError]] = MappingProxyType(
    {
        cls.CODE: cls
        for cls in (
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        )
        if cls.CODE is not None
    }
)


def error_class(code: grpc.StatusCode) -> type[TradingError]:
    """The class raised for ``code`` (TradingError for a code outside the table)."""
    return ERROR_CLASSES.get(code, TradingError)


# Detail types a google.rpc.Status may carry (google/rpc/error_details.proto).
_DETAIL_TYPES: tuple[type[protobuf_message.Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)


def _unpack(status: status_pb2.Status) -> list[protobuf_message.Message]:
    found: list[protobuf_message.Message] = []
    for packed in status.details:
        for cls in _DETAIL_TYPES:
            if packed.Is(cls.DESCRIPTOR):
                detail = cls()
                packed.Unpack(detail)
                found.append(detail)
                break
    return found


def _rich_status(err: grpc.RpcError) -> status_pb2.Status | None:
    if not callable(getattr(err, "trailing_metadata", None)):
        return None
    try:
        status: status_pb2.Status | None = rpc_status.from_call(err)
    except ValueError:  # code or message inconsistent with the details: ignore the details
        return None
    return status


def _correlation_id(err: grpc.RpcError) -> str | None:
    # Sync calls give (key, value) namedtuples, grpc.aio a Metadata of (key, value) pairs.
    trailing: Any = err.trailing_metadata() if callable(getattr(err, "trailing_metadata", None)) else None
    for key, value in trailing or ():
        if key == CORRELATION_ID_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def build_error(
    code: grpc.StatusCode,
    message: str,
    status: status_pb2.Status | None = None,
    *,
    correlation_id: str | None = None,
) -> TradingError:
    """The typed error for a status code and its google.rpc.Status (if any)."""
    details = _unpack(status) if status is not None else []
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo) and not reason:
            reason, domain, metadata = detail.reason, detail.domain, dict(detail.metadata)
        elif isinstance(detail, error_details_pb2.BadRequest):
            violations += [FieldViolation(v.field, v.description, v.reason) for v in detail.field_violations]
        elif isinstance(detail, error_details_pb2.RetryInfo) and retry_after is None:
            retry_after = detail.retry_delay.ToNanoseconds() / 1e9
    return error_class(code)(
        code,
        message,
        reason,
        domain,
        metadata,
        violations,
        retry_after,
        details=details,
        correlation_id=correlation_id,
    )


def from_rpc_error(err: grpc.RpcError) -> TradingError:
    """The typed error for a failed call (a sync ``grpc.RpcError`` that is a
    ``grpc.Call``, or a ``grpc.aio.AioRpcError``)."""
    code_fn = getattr(err, "code", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details_fn = getattr(err, "details", None)
    message = (details_fn() if callable(details_fn) else None) or ""
    return build_error(code, message, _rich_status(err), correlation_id=_correlation_id(err))
