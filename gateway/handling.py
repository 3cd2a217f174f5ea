"""Per-request plumbing: correlation ids, deadlines, idempotency keys, bodies."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping

import grpc
from starlette.requests import ClientDisconnect, Request

from gateway.config import GatewayOptions
from gateway.problems import Problem, bad_request, violation

CORRELATION_HEADER = "x-correlation-id"
IDEMPOTENCY_HEADER = "idempotency-key"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# grpc-timeout (gRPC over HTTP/2 spec): up to 8 digits and a unit.
_GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def correlation_id(headers: Mapping[str, str]) -> str:
    """The client's X-Correlation-Id when it is a sane token, else a fresh one."""
    given = headers.get(CORRELATION_HEADER, "")
    return given if _SAFE_ID.match(given) else str(uuid.uuid4())


def parse_timeout(headers: Mapping[str, str]) -> float | None:
    """Seconds asked for by ``grpc-timeout`` or ``X-Request-Timeout`` (seconds,
    decimal), None when neither is sent; 400 when malformed."""
    raw = headers.get("grpc-timeout")
    if raw is not None:
        m = _GRPC_TIMEOUT.match(raw.strip())
        if m is None:
            raise bad_request(
                "malformed grpc-timeout header",
                [violation("grpc-timeout", "expected e.g. 500m or 2S", "format", pointer="")],
            )
        return int(m.group(1)) * _UNITS[m.group(2)]
    raw = headers.get("x-request-timeout")
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value < 1e9:
            raise bad_request(
                "malformed X-Request-Timeout header",
                [violation("x-request-timeout", "expected positive seconds, e.g. 2.5", "format", pointer="")],
            )
        return value
    return None


def call_timeout(headers: Mapping[str, str], options: GatewayOptions, *, stream: bool) -> float | None:
    """The deadline budget of a call: the client's ask capped at the maximum,
    else the default (streams: none unless asked, they are long-lived)."""
    asked = parse_timeout(headers)
    if asked is None:
        return None if stream else options.default_timeout_s
    return min(asked, options.max_timeout_s)


def idempotency_key(headers: Mapping[str, str]) -> str:
    key = headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return ""
    # Present means checked, even empty: a key the client thinks it sent must not be ignored.
    if not _SAFE_ID.match(key):
        raise bad_request(
            "malformed Idempotency-Key header",
            [violation("idempotency-key", "1-128 of A-Z a-z 0-9 . _ : / + = -", "format", pointer="")],
        )
    return key


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond, also when chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise bad_request("malformed Content-Length", []) from None
        if too_big:
            if int(declared) <= _DRAIN_MAX_BYTES:
                await _drain(request)
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await _drain(request)
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if body.strip():
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise Problem(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unsupported content type {ctype!r}; send application/json",
                status=415,
            )
    return body


# Reading the rest of an oversized body before answering 413, bounded in
# bytes and time. Closing a socket with unread data in it makes the kernel
# send a reset, and a client still sending its body then loses the 413 (it
# sees "connection reset"); read up to these bounds, the close is a clean FIN.
# Beyond them (a client declaring gigabytes, or one that stalls), the
# connection is closed anyway.
_DRAIN_MAX_BYTES = 8 << 20
_DRAIN_MAX_S = 2.0


async def _drain(request: Request) -> None:
    drained = 0
    try:
        async with asyncio.timeout(_DRAIN_MAX_S):
            while drained <= _DRAIN_MAX_BYTES:
                message = await request.receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                drained += len(message.get("body", b""))
    except TimeoutError:
        return


def _too_large(limit: int) -> Problem:
    # "Connection: close": the answer ends the connection (the body may be
    # partly unread; a keep-alive client must not wait on it for its next
    # request).
    return Problem(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"request body larger than {limit} bytes",
        status=413,
        reason="BODY_TOO_LARGE",
        headers={"Connection": "close"},
    )
