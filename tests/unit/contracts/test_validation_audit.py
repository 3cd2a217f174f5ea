"""protovalidate rules of the audit contracts."""

from __future__ import annotations

import pytest
from trading.audit.v1 import audit_service_pb2 as pb
from trading.audit.v1 import events_pb2, types_pb2

from tests.support.validation import violations


def test_query_events_valid_filters_pass() -> None:
    assert violations(pb.QueryEventsRequest()) == set()
    request = pb.QueryEventsRequest(
        page_size=100,
        correlation_id="0190f4a2-7c1e-7d3a-9b2f-1a2b3c4d5e6f",
        aggregate_type="order",
        aggregate_id="0190f4a2-7c1e-7d3a-9b2f-1a2b3c4d5e6f",
        event_type="trading.execution.v1.OrderAccepted",
        from_sequence=42,
        include_raw=True,
    )
    request.time_range.start.FromSeconds(1_700_000_000)
    assert violations(request) == set()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"page_size": 10_000}, ("page_size", "int32.gte_lte")),
        ({"page_token": "t" * 513}, ("page_token", "string.max_len")),
        ({"correlation_id": "has space"}, ("correlation_id", "string.pattern")),
        ({"aggregate_type": "Order"}, ("aggregate_type", "string.pattern")),
        ({"event_type": "OrderAccepted"}, ("event_type", "string.pattern")),
        ({"event_type": "trading.execution.v1.orderAccepted"}, ("event_type", "string.pattern")),
        ({"aggregate_id": "0190f4a2"}, ("", "query_events.aggregate_id_needs_type")),
        ({"aggregate_type": "order", "aggregate_id": "x" * 129}, ("aggregate_id", "string.max_len")),
    ],
)
def test_bad_query_events_filters(fields: dict[str, object], expected: tuple[str, str]) -> None:
    assert violations(pb.QueryEventsRequest(**fields)) == {expected}  # type: ignore[arg-type]


def test_query_events_time_range_must_be_ordered() -> None:
    request = pb.QueryEventsRequest()
    request.time_range.start.FromSeconds(1_700_000_100)
    request.time_range.end.FromSeconds(1_700_000_000)
    assert violations(request) == {("time_range", "time_range.ordered")}


def test_verify_chain_range() -> None:
    assert violations(pb.VerifyChainRequest()) == set()
    assert violations(pb.VerifyChainRequest(from_sequence=10)) == set()
    assert violations(pb.VerifyChainRequest(from_sequence=10, to_sequence=10)) == set()
    assert violations(pb.VerifyChainRequest(from_sequence=11, to_sequence=10)) == {
        ("", "verify_chain.range_ordered")
    }


def test_replay_tenant_request() -> None:
    assert violations(pb.ReplayTenantRequest()) == set()
    assert (
        violations(
            pb.ReplayTenantRequest(aggregates=[types_pb2.REPLAY_AGGREGATE_ORDERS], max_differences=1000)
        )
        == set()
    )
    assert violations(pb.ReplayTenantRequest(aggregates=[types_pb2.REPLAY_AGGREGATE_UNSPECIFIED])) == {
        ("aggregates[0]", "enum.not_in")
    }
    assert violations(pb.ReplayTenantRequest(aggregates=[types_pb2.REPLAY_AGGREGATE_ORDERS] * 2)) == {
        ("aggregates", "repeated.unique")
    }
    assert violations(pb.ReplayTenantRequest(max_differences=5000)) == {("max_differences", "int32.gte_lte")}


def test_audit_chain_broken_event() -> None:
    event = events_pb2.AuditChainBroken(
        chain_break=types_pb2.ChainBreak(sequence=7, reason=types_pb2.CHAIN_BREAK_REASON_HASH_MISMATCH),
        detected_by=events_pb2.DETECTION_SOURCE_SCHEDULED,
    )
    event.detected_at.FromSeconds(1_700_000_000)
    assert violations(event) == set()
    assert violations(events_pb2.AuditChainBroken()) == {
        ("chain_break", "required"),
        ("detected_by", "enum.not_in"),
        ("detected_at", "required"),
    }
