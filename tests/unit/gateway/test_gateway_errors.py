"""The gRPC -> HTTP status table, problem+json documents, request headers."""

from __future__ import annotations

import json

import grpc
import grpc.aio
import pytest
from trading.execution.v1 import execution_service_pb2 as execution_pb2
from trading.risk.v1 import risk_service_pb2 as risk_pb2

from gateway.config import GatewayOptions
from gateway.handling import call_timeout, correlation_id, idempotency_key, parse_timeout
from gateway.problems import HTTP_STATUS, PROBLEM_CONTENT_TYPE, Problem, from_rpc_error, json_pointer
from gateway.transcode import parse_body
from runtime.errors import STATUS_DETAILS_KEY, FieldViolation, domain_error, invalid_argument

EXPECTED = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def test_every_grpc_code_has_exactly_the_documented_http_status() -> None:
    assert {code.name: status for code, status in HTTP_STATUS.items()} == EXPECTED
    assert len(HTTP_STATUS) == len(grpc.StatusCode)


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_each_code_becomes_a_problem_document(code: grpc.StatusCode) -> None:
    err = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="boom")
    response = from_rpc_error(err).response("cid-1")
    assert response.status_code == EXPECTED[code.name]
    assert response.media_type == PROBLEM_CONTENT_TYPE
    doc = json.loads(bytes(response.body))
    assert doc["code"] == code.name and doc["correlationId"] == "cid-1"
    # Transport failures carry internal addresses in their text: replaced by a generic message.
    transport = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "DATA_LOSS"}
    assert (doc["detail"] == "boom") is (code.name not in transport)
    assert doc["status"] == EXPECTED[code.name] and doc["type"].endswith(code.name.lower().replace("_", "-"))


def _rich(st: object) -> grpc.aio.AioRpcError:
    from runtime.errors import grpc_code

    status = st  # google.rpc.Status
    return grpc.aio.AioRpcError(
        grpc_code(status.code),  # type: ignore[attr-defined]
        grpc.aio.Metadata(),
        grpc.aio.Metadata((STATUS_DETAILS_KEY, status.SerializeToString())),  # type: ignore[attr-defined]
        details=status.message,  # type: ignore[attr-defined]
    )


def test_google_rpc_details_are_carried() -> None:
    bad = from_rpc_error(
        _rich(invalid_argument([FieldViolation("legs[0].quantity", "must be > 0", "decimal.positive")]))
    )
    assert bad.http_status == 400
    assert bad.field_violations == [
        {
            "field": "legs[0].quantity",
            "pointer": "/legs/0/quantity",
            "description": "must be > 0",
            "reason": "decimal.positive",
        }
    ]
    refused = from_rpc_error(
        _rich(
            domain_error(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "RISK_X", "trading.risk", "slow down", retry_after_s=2.5
            )
        )
    )
    response = refused.response("c")
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    doc = json.loads(bytes(response.body))
    assert (doc["reason"], doc["domain"], doc["retryAfterSeconds"]) == ("RISK_X", "trading.risk", 2.5)


def test_a_service_whose_database_is_down_is_503_with_retry_after() -> None:
    """The status the server interceptor sends for a lost PostgreSQL connection."""
    from runtime.errors import DEPENDENCY_DOMAIN, dependency_unavailable

    outage = dependency_unavailable(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"))
    assert outage is not None
    response = from_rpc_error(_rich(outage)).response("c")
    assert response.status_code == 503 and response.media_type == PROBLEM_CONTENT_TYPE
    assert response.headers["retry-after"] == "1"
    doc = json.loads(bytes(response.body))
    assert (doc["code"], doc["domain"], doc["retryAfterSeconds"]) == ("UNAVAILABLE", DEPENDENCY_DOMAIN, 1.0)
    assert "5432" not in doc["detail"]


def test_an_open_breaker_is_503_with_retry_after_and_no_address() -> None:
    from runtime.errors import CircuitOpenError

    response = from_rpc_error(CircuitOpenError("10.0.0.7:50051", 0.2)).response("c")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    doc = json.loads(bytes(response.body))
    assert doc["retryAfterSeconds"] == 0.2
    assert "10.0.0.7" not in doc["detail"]


@pytest.mark.parametrize(
    ("path", "pointer"),
    [
        ("", ""),
        ("a", "/a"),
        ("a.b", "/a/b"),
        ("legs[2].qty", "/legs/2/qty"),
        ('labels["x/y"]', "/labels/x~1y"),
    ],
)
def test_json_pointers(path: str, pointer: str) -> None:
    assert json_pointer(path) == pointer


@pytest.mark.parametrize("raw", [b"{", b'{"a":}', b"\xff\xfe", b"[1,"])
def test_malformed_json_is_400_never_500(raw: bytes) -> None:
    with pytest.raises(Problem) as bad:
        parse_body(raw)
    assert bad.value.http_status == 400


def test_deadline_headers() -> None:
    options = GatewayOptions(default_timeout_s=5, max_timeout_s=30)
    assert call_timeout({}, options, stream=False) == 5
    assert call_timeout({}, options, stream=True) is None
    assert call_timeout({"grpc-timeout": "500m"}, options, stream=False) == 0.5
    assert call_timeout({"grpc-timeout": "2M"}, options, stream=False) == 30  # capped
    assert call_timeout({"x-request-timeout": "1.5"}, options, stream=False) == 1.5
    for bad in ({"grpc-timeout": "5x"}, {"x-request-timeout": "-1"}, {"x-request-timeout": "soon"}):
        with pytest.raises(Problem):
            parse_timeout(bad)


def test_correlation_and_idempotency_headers() -> None:
    assert correlation_id({"x-correlation-id": "abc-1"}) == "abc-1"
    generated = correlation_id({"x-correlation-id": "bad value\n"})
    assert generated != "bad value\n" and len(generated) == 36
    assert idempotency_key({"idempotency-key": "k-1"}) == "k-1"
    with pytest.raises(Problem):
        idempotency_key({"idempotency-key": "x" * 200})


@pytest.mark.parametrize(
    ("path", "pointer"),
    [
        ("client_order_id", "/clientOrderId"),
        ("limit_price.value", "/limitPrice/value"),
        ("no_such_field.x", "/no_such_field/x"),  # unknown to the descriptor: kept as sent
    ],
)
def test_json_pointers_use_the_request_messages_json_names(path: str, pointer: str) -> None:
    assert json_pointer(path, execution_pb2.PlaceOrderRequest.DESCRIPTOR) == pointer


def test_json_pointers_walk_maps_and_repeated_messages() -> None:
    limits = risk_pb2.SetLimitsRequest.DESCRIPTOR
    assert json_pointer('limits.max_position_by_symbol["BTC-USD"].value', limits) == (
        "/limits/maxPositionBySymbol/BTC-USD/value"
    )


def test_every_503_says_when_to_come_back() -> None:
    """A transport-level UNAVAILABLE (a channel still connecting, no RetryInfo)
    still gets Retry-After: clients retry with the same Idempotency-Key."""
    plain = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="failed to connect"
    )
    response = from_rpc_error(plain).response("c")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    not_found = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert "retry-after" not in from_rpc_error(not_found).response("c").headers
