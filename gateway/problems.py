"""Errors of the gateway as RFC 9457 problem+json, and THE table from gRPC
status codes to HTTP statuses.

Every failure a client sees, whether the gateway decided it (bad JSON,
missing token, rate limit) or a service did (a gRPC status with
``google.rpc`` details), leaves as the same document::

    {"type": "https://errors.trading.example/invalid-argument",
     "title": "Invalid Argument", "status": 400,
     "detail": "invalid request: quantity", "code": "INVALID_ARGUMENT",
     "correlationId": "...", "reason": "...", "domain": "...",
     "fieldViolations": [{"field": "quantity", "pointer": "/quantity",
                          "description": "...", "reason": "..."}],
     "retryAfterSeconds": 1.0}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
import grpc.aio
from google.protobuf.descriptor import FieldDescriptor
from starlette.responses import Response

from runtime.errors import CircuitOpenError, error_details

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://errors.trading.example/"

# The one mapping from gRPC status codes to HTTP statuses. It follows
# google.rpc.Code's documented HTTP mapping (as grpc-gateway does), except
# where a comment says why not.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    # 499 "Client Closed Request" (nginx): the caller gave up; never sent to a
    # client that is still listening, but logged/metered consistently.
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    # Deviation: google.rpc and grpc-gateway say 400. Our services use
    # FAILED_PRECONDITION for "valid request, wrong state" (risk refused the
    # order, the order is no longer cancelable). 409 Conflict says exactly
    # that and keeps 400 meaning "fix your input".
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

assert set(HTTP_STATUS) == set(grpc.StatusCode), "every gRPC code needs an HTTP status"

# A message descriptor (the pure-Python and the upb ones have no common static type).
Descriptor: TypeAlias = Any


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status of a gRPC code (see :data:`HTTP_STATUS`)."""
    return HTTP_STATUS[code]


def _title(code: grpc.StatusCode) -> str:
    return code.name.replace("_", " ").title()


def _tokens(field_path: str) -> list[tuple[str, bool]]:
    """``legs[0].quantity`` -> [("legs", False), ("0", True), ("quantity", False)]
    (True: a subscript, an index or a map key)."""
    tokens: list[tuple[str, bool]] = []
    i = 0
    current = ""
    while i < len(field_path):
        ch = field_path[i]
        if ch == ".":
            if current:
                tokens.append((current, False))
            current = ""
        elif ch == "[":
            if current:
                tokens.append((current, False))
            current = ""
            end = field_path.find("]", i)
            end = len(field_path) if end < 0 else end
            key = field_path[i + 1 : end]
            if len(key) >= 2 and key[0] == key[-1] == '"':
                key = key[1:-1]
            tokens.append((key, True))
            i = end
        else:
            current += ch
        i += 1
    if current:
        tokens.append((current, False))
    return tokens


def _json_names(tokens: list[tuple[str, bool]], message: Descriptor) -> list[str]:
    """Field names as the JSON body spells them (proto3 JSON: ``clientOrderId``),
    walking the message's fields; what the descriptor does not know is kept."""
    names: list[str] = []
    current: Descriptor | None = message
    for token, subscript in tokens:
        if subscript:
            names.append(token)
            continue
        f = current.fields_by_name.get(token) if current is not None else None
        if f is None:
            names.append(token)
            current = None
            continue
        names.append(f.json_name)
        current = f.message_type if f.type == FieldDescriptor.TYPE_MESSAGE else None
        if current is not None and current.GetOptions().map_entry:
            value = current.fields_by_name["value"]
            current = value.message_type if value.type == FieldDescriptor.TYPE_MESSAGE else None
    return names


def json_pointer(field_path: str, message: Descriptor | None = None) -> str:
    """RFC 6901 pointer of a protovalidate/google.rpc field path:
    ``legs[0].quantity`` -> ``/legs/0/quantity``, ``labels["a/b"]`` -> ``/labels/a~1b``.
    With the request's `message`, names are the JSON ones the client sent
    (``client_order_id`` -> ``/clientOrderId``)."""
    if not field_path:
        return ""
    tokens = _tokens(field_path)
    names = _json_names(tokens, message) if message is not None else [t for t, _ in tokens]
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in names)


@dataclass(slots=True)
class Problem(Exception):
    """An error to answer with; raised anywhere in request handling."""

    code: grpc.StatusCode
    detail: str
    status: int | None = None  # overrides the table (e.g. 413, 405, 415)
    reason: str = ""
    domain: str = ""
    field_violations: list[dict[str, str]] = field(default_factory=list)
    retry_after_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return self.status if self.status is not None else http_status(self.code)

    def body(self, correlation_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code.name.lower().replace("_", "-"),
            "title": _title(self.code),
            "status": self.http_status,
            "detail": self.detail,
            "code": self.code.name,
            "correlationId": correlation_id,
        }
        if self.reason:
            doc["reason"] = self.reason
        if self.domain:
            doc["domain"] = self.domain
        if self.field_violations:
            doc["fieldViolations"] = self.field_violations
        if self.retry_after_s is not None:
            doc["retryAfterSeconds"] = self.retry_after_s
        return doc

    def response(self, correlation_id: str) -> Response:
        headers = dict(self.headers)
        if self.retry_after_s is not None and "Retry-After" not in headers:
            headers["Retry-After"] = str(max(1, int(-(-self.retry_after_s // 1))))
        return Response(
            json.dumps(self.body(correlation_id), separators=(",", ":")),
            status_code=self.http_status,
            media_type=PROBLEM_CONTENT_TYPE,
            headers=headers,
        )


def violation(
    field_path: str,
    description: str,
    reason: str = "",
    pointer: str | None = None,
    *,
    message: Descriptor | None = None,
) -> dict[str, str]:
    """One entry of ``fieldViolations``: `field` is the contract's path
    (proto names, as gRPC clients see it), `pointer` the JSON body's (JSON
    names when the request's `message` is given)."""
    return {
        "field": field_path,
        "pointer": json_pointer(field_path, message) if pointer is None else pointer,
        "description": description,
        "reason": reason,
    }


def bad_request(detail: str, violations: list[dict[str, str]]) -> Problem:
    return Problem(grpc.StatusCode.INVALID_ARGUMENT, detail, field_violations=violations)


_GENERIC = {
    grpc.StatusCode.UNAVAILABLE: "the service is unavailable, try again",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the call did not finish within its deadline",
    grpc.StatusCode.INTERNAL: "internal error",
    grpc.StatusCode.UNKNOWN: "internal error",
    grpc.StatusCode.DATA_LOSS: "internal error",
}
_TRANSPORT_CODES = frozenset(_GENERIC)


def from_rpc_error(err: grpc.aio.AioRpcError, request: Descriptor | None = None) -> Problem:
    """The problem a failed downstream call becomes, with its google.rpc details
    (field pointers in the JSON names of `request`, the call's request message)."""
    details = error_details(err)
    info = details.error_info
    message = details.message or _title(details.code)
    if (details.status is None and details.code in _TRANSPORT_CODES) or isinstance(err, CircuitOpenError):
        # A transport-level failure (no google.rpc.Status from a service) or
        # the gateway's own open breaker: their text names internal
        # addresses, so clients get a generic message (RetryInfo is kept).
        message = _GENERIC[details.code]
    return Problem(
        code=details.code,
        detail=message,
        reason=info.reason if info is not None else "",
        domain=info.domain if info is not None else "",
        field_violations=[
            violation(v.field, v.description, v.reason, message=request) for v in details.field_violations
        ],
        # Every 503 says when to come back: the service's RetryInfo, else a
        # second (a channel reconnecting, a breaker probing again).
        retry_after_s=details.retry_delay_s
        if details.retry_delay_s is not None or details.code is not grpc.StatusCode.UNAVAILABLE
        else 1.0,
    )


# The problem+json schema (OpenAPI 3.1 / JSON Schema 2020-12), shared by /openapi.json.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, with the gRPC status and google.rpc details.",
    "required": ["type", "title", "status", "detail", "code", "correlationId"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": [c.name for c in grpc.StatusCode]},
        "correlationId": {"type": "string"},
        "reason": {"type": "string", "description": "google.rpc.ErrorInfo reason"},
        "domain": {"type": "string", "description": "google.rpc.ErrorInfo domain"},
        "retryAfterSeconds": {"type": "number"},
        "fieldViolations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "pointer", "description"],
                "properties": {
                    "field": {"type": "string"},
                    "pointer": {"type": "string", "description": "RFC 6901 JSON pointer"},
                    "description": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
