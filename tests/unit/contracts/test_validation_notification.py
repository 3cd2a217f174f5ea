"""protovalidate rules of the notification contracts."""

from __future__ import annotations

import pytest
from trading.notification.v1 import events_pb2, types_pb2
from trading.notification.v1 import notification_service_pb2 as pb

from tests.support.validation import violations

WEBHOOK_ID = "0190f4a2-7c1e-7d3a-9b2f-1a2b3c4d5e6f"


def test_subscribe_filters() -> None:
    assert violations(pb.SubscribeRequest()) == set()
    valid = pb.SubscribeRequest(
        kinds=[types_pb2.NOTIFICATION_KIND_FILL, types_pb2.NOTIFICATION_KIND_RISK],
        min_severity=types_pb2.SEVERITY_WARNING,
    )
    assert violations(valid) == set()
    assert violations(pb.SubscribeRequest(kinds=[types_pb2.NOTIFICATION_KIND_UNSPECIFIED])) == {
        ("kinds[0]", "enum.not_in")
    }
    assert violations(pb.SubscribeRequest(kinds=[types_pb2.NOTIFICATION_KIND_FILL] * 2)) == {
        ("kinds", "repeated.unique")
    }
    assert violations(pb.SubscribeRequest(min_severity=99)) == {("min_severity", "enum.defined_only")}  # type: ignore[arg-type]


def test_register_webhook_valid() -> None:
    request = pb.RegisterWebhookRequest(
        url="https://hooks.example.com/trading?team=desk-1",
        event_types=["trading.execution.v1.OrderFillReported", "trading.risk.v1.TradingStateChanged"],
        description="fills and kill switch to the desk's chat",
    )
    assert violations(request) == set()
    assert violations(pb.RegisterWebhookRequest(url="http://127.0.0.1:8080/hook")) == set()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"url": ""}, ("url", "string.uri_empty")),
        ({"url": "not a url"}, ("url", "string.uri")),
        ({"url": "ftp://files.example.com/x"}, ("url", "webhook.url_scheme")),
        ({"url": "https://example.com/" + "a" * 2048}, ("url", "string.max_len")),
        ({"event_types": ["OrderFilled"]}, ("event_types[0]", "string.pattern")),
        (
            {"event_types": ["trading.execution.v1.OrderAccepted", "trading.execution.v1.OrderAccepted"]},
            ("event_types", "repeated.unique"),
        ),
        ({"description": "d" * 257}, ("description", "string.max_len")),
    ],
)
def test_bad_register_webhook_fields(fields: dict[str, object], expected: tuple[str, str]) -> None:
    request = pb.RegisterWebhookRequest(url="https://hooks.example.com/t")
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(request, name).extend(value)
        else:
            setattr(request, name, value)
    assert expected in violations(request)


def test_too_many_event_types() -> None:
    request = pb.RegisterWebhookRequest(
        url="https://hooks.example.com/t", event_types=[f"trading.x.v1.Event{i}" for i in range(51)]
    )
    assert violations(request) == {("event_types", "repeated.max_items")}


def test_ids_and_pages() -> None:
    assert violations(pb.DeleteWebhookRequest(webhook_id=WEBHOOK_ID)) == set()
    assert violations(pb.DeleteWebhookRequest(webhook_id="42")) == {("webhook_id", "string.uuid")}
    assert violations(pb.DeleteWebhookRequest()) == {("webhook_id", "string.uuid_empty")}
    assert violations(pb.RedriveDeadLetterRequest(dead_letter_id="nope")) == {
        ("dead_letter_id", "string.uuid")
    }
    assert violations(pb.ListWebhooksRequest(page_size=10_000)) == {("page_size", "int32.gte_lte")}
    assert violations(pb.ListDeadLettersRequest()) == set()
    assert violations(pb.ListDeadLettersRequest(webhook_id=WEBHOOK_ID, page_size=500)) == set()
    assert violations(pb.ListDeadLettersRequest(webhook_id="nope")) == {("webhook_id", "string.uuid")}


def test_delivery_events() -> None:
    delivered = events_pb2.WebhookDelivered(
        webhook_id=WEBHOOK_ID,
        delivery_id=WEBHOOK_ID,
        event_id="e1",
        event_type="t",
        attempts=1,
        http_status=204,
    )
    delivered.delivered_at.FromSeconds(1_700_000_000)
    assert violations(delivered) == set()
    delivered.http_status = 500
    delivered.attempts = 0
    assert violations(delivered) == {("http_status", "int32.gte_lte"), ("attempts", "int32.gte")}

    failed = events_pb2.WebhookDeliveryFailed(webhook_id=WEBHOOK_ID, delivery_id=WEBHOOK_ID)
    assert violations(failed) == {("dead_letter", "required")}
