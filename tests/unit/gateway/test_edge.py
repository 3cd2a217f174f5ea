"""The public gRPC edge's pure parts: which RPCs it serves, how a gateway
refusal becomes a google.rpc.Status, and the client address it rate-limits by."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2

from gateway.edge import Edge, _peer_host, problem_status
from gateway.problems import Problem, violation
from gateway.routes import RouteTable, build_routes
from runtime.contracts import services


def test_the_edge_serves_every_rpc_with_a_rest_binding_and_nothing_else() -> None:
    table = RouteTable(build_routes())
    edge = Edge(cast(Any, SimpleNamespace(table=table)))
    bound = {
        f"/{svc.full_name}/{m.name}"
        for svc in services()
        for m in svc.methods
        if m.GetOptions().HasExtension(_http_rule())
    }
    assert set(edge.routes) == bound
    assert "/trading.identity.v1.IdentityService/IssueDelegation" not in edge.routes
    served = {h.service_name() for h in edge.handlers()}  # type: ignore[attr-defined]
    assert served == {p.lstrip("/").split("/")[0] for p in bound}


def _http_rule() -> Any:
    from google.api import annotations_pb2

    return annotations_pb2.http


def test_a_refusal_carries_error_info_field_violations_and_retry_info() -> None:
    problem = Problem(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        reason="RATE_LIMITED",
        domain="trading.gateway",
        field_violations=[violation("quantity.value", "must be positive", "decimal.positive", pointer="")],
        retry_after_s=2.5,
    )
    st = problem_status(problem)
    assert st.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and st.message == "slow down"
    info, bad, retry = (
        error_details_pb2.ErrorInfo(),
        error_details_pb2.BadRequest(),
        error_details_pb2.RetryInfo(),
    )
    assert [st.details[0].Unpack(info), st.details[1].Unpack(bad), st.details[2].Unpack(retry)] == [True] * 3
    assert (info.reason, info.domain) == ("RATE_LIMITED", "trading.gateway")
    assert [(v.field, v.reason) for v in bad.field_violations] == [("quantity.value", "decimal.positive")]
    assert retry.retry_delay.ToMilliseconds() == 2500


def test_a_bare_refusal_has_no_details() -> None:
    st = problem_status(Problem(grpc.StatusCode.NOT_FOUND, "no such order"))
    assert st.code == grpc.StatusCode.NOT_FOUND.value[0] and not st.details


def test_the_peer_address_is_the_host_without_port() -> None:
    assert _peer_host("ipv4:127.0.0.1:53100") == "127.0.0.1"
    assert _peer_host("ipv6:[::1]:53100") == "::1"
    assert _peer_host("unix:/tmp/sock") == "unix:/tmp/sock"
    assert _peer_host("") == "unknown"
