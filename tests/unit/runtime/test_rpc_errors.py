"""Rich gRPC errors: building statuses and reading them back."""

from __future__ import annotations

import grpc
import grpc.aio
import protovalidate
import pytest
from google.rpc import error_details_pb2, status_pb2
from trading.identity.v1 import identity_service_pb2 as id_pb

from runtime.errors import (
    STATUS_DETAILS_KEY,
    FieldViolation,
    ServiceError,
    UnauthenticatedError,
    domain_error,
    error_details,
    invalid_argument,
    status,
    to_grpc_status,
)


def as_client_error(st: status_pb2.Status) -> grpc.aio.AioRpcError:
    """What a client sees when a server ended the call with ``st``."""
    converted = to_grpc_status(st)
    return grpc.aio.AioRpcError(
        converted.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*converted.trailing_metadata),
        details=converted.details,
    )


def test_protovalidate_violations_become_field_violations() -> None:
    request = id_pb.CreateApiKeyRequest(name="", scopes=["orders:read", "BAD"])
    st = invalid_argument(protovalidate.collect_violations(request))
    assert st.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert st.message == "invalid request: name, scopes[1]"
    details = error_details(as_client_error(st))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.reason) for v in details.field_violations] == [
        ("name", "string.min_len"),
        ("scopes[1]", "string.pattern"),
    ]
    assert details.field_violations[0].description == "must be at least 1 characters"


def test_violations_found_in_code() -> None:
    st = invalid_argument(
        [FieldViolation("legs[0].quantity", "must be positive", "decimal.positive")], "bad leg"
    )
    details = error_details(as_client_error(st))
    assert details.message == "bad leg"
    assert details.violated_fields == ["legs[0].quantity"]


def test_domain_error_carries_error_info_and_retry_info() -> None:
    st = domain_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RISK_ORDER_RATE_EXCEEDED",
        "trading.risk",
        "too many orders",
        {"limit": "10/s"},
        retry_after_s=0.25,
    )
    details = error_details(as_client_error(st))
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.error_info == error_details_pb2.ErrorInfo(
        reason="RISK_ORDER_RATE_EXCEEDED", domain="trading.risk", metadata={"limit": "10/s"}
    )
    assert details.retry_delay_s == pytest.approx(0.25)


def test_to_grpc_status_keeps_extra_trailers() -> None:
    converted = to_grpc_status(status(grpc.StatusCode.NOT_FOUND, "nope"), [("x-correlation-id", "c1")])
    assert converted.code == grpc.StatusCode.NOT_FOUND
    assert converted.details == "nope"
    keys = [k for k, _ in converted.trailing_metadata]
    assert keys == ["x-correlation-id", STATUS_DETAILS_KEY]


def test_errors_without_rich_status_still_decode() -> None:
    err = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x"
    )
    details = error_details(err)
    assert (details.code, details.message, details.status) == (grpc.StatusCode.INTERNAL, "x", None)


def test_service_errors_know_their_code() -> None:
    assert ServiceError(status(grpc.StatusCode.ABORTED, "conflict")).code == grpc.StatusCode.ABORTED
    assert UnauthenticatedError().code == grpc.StatusCode.UNAUTHENTICATED


def test_message_level_rule_becomes_a_violation_of_the_request_itself() -> None:
    """A rule on the whole request (LIMIT needs a price) has no field path."""
    from trading.common.v1 import decimal_pb2, market_pb2, types_pb2
    from trading.execution.v1 import execution_service_pb2 as ex_pb
    from trading.execution.v1 import types_pb2 as ex_types

    request = ex_pb.PlaceOrderRequest(
        client_order_id="c-1",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        type=market_pb2.ORDER_TYPE_LIMIT,
        time_in_force=ex_types.TIME_IN_FORCE_GTC,
        quantity=decimal_pb2.Decimal(value="1"),
    )
    st = invalid_argument(protovalidate.collect_violations(request))
    bad = error_details_pb2.BadRequest()
    st.details[0].Unpack(bad)
    assert [(v.field, v.reason) for v in bad.field_violations] == [("", "place_order.limit_price_required")]


async def test_a_rule_that_cannot_be_evaluated_is_the_callers_error() -> None:
    """Found by fuzzing the gateway: absurd timestamps overflow a CEL rule.
    The validation interceptor answers INVALID_ARGUMENT, not UNKNOWN."""
    from google.protobuf import json_format
    from trading.analytics.v1 import analytics_service_pb2 as an_pb

    from runtime.interceptors import _checker

    request = an_pb.GetPnlSeriesRequest()
    json_format.ParseDict(
        {"timeRange": {"start": "2093-03-30T13:56:46Z", "end": "0160-07-29T19:09:46Z"}, "step": "3s"}, request
    )
    with pytest.raises(protovalidate.EvaluationError):
        protovalidate.collect_violations(request)
    (violation,) = _checker(protovalidate.Validator())(request)
    st = invalid_argument([violation])
    assert st.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
