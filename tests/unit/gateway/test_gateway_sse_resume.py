"""Which SSE streams carry resumable ids, and what a Last-Event-ID may be (gateway.streams)."""

from __future__ import annotations

import pytest
from trading.execution.v1 import execution_service_pb2 as exec_pb
from trading.marketdata.v1 import marketdata_service_pb2 as md_pb
from trading.notification.v1 import notification_service_pb2 as notification_pb
from trading.portfolio.v1 import portfolio_service_pb2 as portfolio_pb

from gateway.problems import Problem
from gateway.streams import LAST_EVENT_ID, resumable, resume_position


def test_only_the_order_update_stream_is_resumable() -> None:
    assert resumable(exec_pb.StreamOrderUpdatesRequest(), exec_pb.StreamOrderUpdatesResponse)
    assert not resumable(md_pb.StreamQuotesRequest(), md_pb.StreamQuotesResponse)
    assert not resumable(portfolio_pb.StreamPortfolioRequest(), portfolio_pb.StreamPortfolioResponse)
    assert not resumable(notification_pb.SubscribeRequest(), notification_pb.SubscribeResponse)


@pytest.mark.parametrize(
    ("header", "position"), [("0", 0), ("42", 42), (" 7 ", 7), (str(2**64 - 1), 2**64 - 1)]
)
def test_a_decimal_position_is_taken(header: str, position: int) -> None:
    assert resume_position(header) == position


@pytest.mark.parametrize("header", ["", "abc", "-1", "1.5", "0x10", "١٢", str(2**64), "1 2"])
def test_anything_else_is_a_400_naming_the_header(header: str) -> None:
    with pytest.raises(Problem) as caught:
        resume_position(header)
    problem = caught.value
    assert problem.http_status == 400
    assert [v["field"] for v in problem.field_violations] == [LAST_EVENT_ID]
    assert problem.field_violations[0]["reason"] == "INVALID_LAST_EVENT_ID"
