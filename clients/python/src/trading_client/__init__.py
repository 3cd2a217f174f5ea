"""Python client SDK of the trading platform's public gRPC edge.

``AsyncTradingClient`` (asyncio, grpc.aio) and ``TradingClient`` (threads)
expose the generated stubs of the ``trading-contracts`` package on a channel
that adds the credential, a default timeout, idempotency keys and retries, and
raises typed :mod:`trading_client.errors` instead of ``grpc.RpcError``.
See clients/python/README.md."""

from __future__ import annotations

from collections.abc import Iterable

from trading_client.aio import AsyncTradingClient
from trading_client.errors import (
    ERROR_CLASSES,
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    TradingError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from trading_client.methods import IDEMPOTENCY_KEY, MethodInfo, method_info
from trading_client.retry import RetryPolicy
from trading_client.sync import TradingClient

#: Initial metadata the edge sets on a reply replayed for a repeated idempotency key.
REPLAYED_KEY = "idempotent-replayed"


def idempotency_key(key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata choosing a mutating call's idempotency key yourself
    (``metadata=idempotency_key(k)``), e.g. to repeat it after a crash."""
    return ((IDEMPOTENCY_KEY, key),)


def replayed(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Was a reply replayed from an earlier call with the same idempotency key?
    ``metadata``: the call's initial metadata (``await call.initial_metadata()``)."""
    return any(key == REPLAYED_KEY and value in ("true", b"true") for key, value in metadata or ())


__all__ = [
    "ERROR_CLASSES",
    "IDEMPOTENCY_KEY",
    "REPLAYED_KEY",
    "Aborted",
    "AlreadyExists",
    "AsyncTradingClient",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "MethodInfo",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "TradingClient",
    "TradingError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "idempotency_key",
    "method_info",
    "replayed",
]
