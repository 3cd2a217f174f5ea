"""What the sync and asyncio clients share: TLS credentials, channel options,
the metadata a call is sent with."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

from trading_client.errors import DeadlineExceeded
from trading_client.methods import IDEMPOTENCY_KEY, MethodInfo

Metadata = tuple[tuple[str, str | bytes], ...]

# A call without a timeout of its own gets this one (seconds), retries included.
DEFAULT_TIMEOUT = 10.0


def channel_credentials(
    root_certificates: bytes | None, ca_file: str | Path | None
) -> grpc.ChannelCredentials:
    """TLS, server-side only: the edge's certificate is verified against
    ``root_certificates`` (PEM), the file ``ca_file``, or the system's roots."""
    if root_certificates is not None and ca_file is not None:
        raise ValueError("pass either root_certificates= or ca_file=, not both")
    if ca_file is not None:
        root_certificates = Path(ca_file).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def channel_options(server_name: str | None, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    found = list(options)
    if server_name is not None:
        found.append(("grpc.ssl_target_name_override", server_name))
    return found


def as_tuple(metadata: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
    return tuple((key, value) for key, value in metadata or ())


def has_idempotency_key(metadata: Metadata) -> bool:
    return any(key == IDEMPOTENCY_KEY for key, _ in metadata)


def with_idempotency_key(info: MethodInfo, metadata: Metadata) -> Metadata:
    """A mutating call's metadata with an idempotency key: the caller's, or a
    new one that every attempt of this call sends again. Not on public RPCs
    (Login, RefreshToken): the edge scopes keys to the authenticated caller
    and refuses them on calls without one."""
    if not info.mutating or info.public or has_idempotency_key(metadata):
        return metadata
    return (*metadata, (IDEMPOTENCY_KEY, str(uuid.uuid4())))


def repeatable(info: MethodInfo, metadata: Metadata) -> bool:
    """May this call be sent more than once? Reads yes; a mutating call only
    with an idempotency key (the edge answers its repeats with the first reply)."""
    return not info.mutating or has_idempotency_key(metadata)


def attempt_timeout(remaining: float | None) -> float | None:
    """The timeout of the next attempt, failing before sending when none is left."""
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded(
            grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the call was sent"
        )
    return remaining


def default_timeout(info: MethodInfo, timeout: float | None, default: float | None) -> float | None:
    """The call's timeout: its own, else the client's default (streams: none, they are long-lived)."""
    if timeout is not None or info.server_streaming or info.client_streaming:
        return timeout
    return default
