"""Pure parts of notification: webhook target policy, signatures, secret
storage, how events read as notifications, and the Subscribe filter."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st
from trading.common.v1 import decimal_pb2, types_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.notification.v1 import types_pb2 as pb
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.risk.v1 import events_pb2 as risk_events
from trading.risk.v1 import risk_service_pb2 as risk_types

from runtime.messaging import new_envelope
from services.notification import domain, signing
from services.notification.api import tenant_subjects
from services.notification.targets import (
    TargetRefusedError,
    address_refusal,
    check_addresses,
    parse_target,
)

# ---------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("url", "allow_http", "reason"),
    [
        ("http://hooks.example.com/x", False, "WEBHOOK_URL_INSECURE"),
        ("ftp://hooks.example.com/x", True, "WEBHOOK_URL_SCHEME"),
        ("https://user:secret@hooks.example.com/x", False, "WEBHOOK_URL_CREDENTIALS"),
        ("https://user@hooks.example.com/x", False, "WEBHOOK_URL_CREDENTIALS"),
        ("https:///no-host", False, "WEBHOOK_URL_HOST"),
        ("https://hooks.example.com/x#frag", False, "WEBHOOK_URL_FRAGMENT"),
        ("https://hooks.example.com:99999/x", False, "WEBHOOK_URL_MALFORMED"),
    ],
)
def test_refused_urls_say_why(url: str, allow_http: bool, reason: str) -> None:
    with pytest.raises(TargetRefusedError) as caught:
        parse_target(url, allow_http=allow_http)
    assert caught.value.reason == reason


def test_accepted_url_keeps_authority_for_pinning() -> None:
    target = parse_target("https://Hooks.Example.com:8443/in?x=1", allow_http=False)
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 8443)
    assert target.host_header == "hooks.example.com:8443"
    pinned = target.url_for(ipaddress.ip_address("2001:db8::1"))
    assert pinned == "https://[2001:db8::1]:8443/in?x=1"
    assert parse_target("http://h.example/", allow_http=True).port == 80


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata endpoint
        ("100.64.0.1", "reserved"),  # carrier-grade NAT
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("93.184.215.14", None),
        ("2606:4700::6810:84e5", None),
    ],
)
def test_address_classes(address: str, refusal: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == refusal


def test_every_resolved_address_must_be_public() -> None:
    target = parse_target("https://mixed.example.com/", allow_http=False)
    public, private = ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.7")
    assert check_addresses(target, (public,), allow_private=False).addresses == (public,)
    with pytest.raises(TargetRefusedError) as caught:
        check_addresses(target, (public, private), allow_private=False)
    assert caught.value.reason == "WEBHOOK_URL_PRIVATE_ADDRESS" and "10.0.0.7" in caught.value.description
    assert check_addresses(target, (public, private), allow_private=True).addresses == (public, private)
    with pytest.raises(TargetRefusedError):
        check_addresses(target, (), allow_private=True)


# ---------------------------------------------------------------------------- signing


def test_signature_is_standard_webhooks_hmac_sha256() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    body = b'{"eventId":"e-1"}'
    headers = signing.signed_headers(secret, "e-1", 1_700_000_000, body)
    expected = hmac.new(base64.b64decode(secret[6:]), b"e-1.1700000000." + body, hashlib.sha256).digest()
    assert headers == {
        "webhook-id": "e-1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1," + base64.b64encode(expected).decode(),
    }
    # Any change of id, time or body changes the signature.
    assert signing.signature(secret, "e-1", 1_700_000_001, body) != headers["webhook-signature"]
    assert signing.signature(secret, "e-1", 1_700_000_000, body + b" ") != headers["webhook-signature"]


def test_secrets_are_sealed_per_webhook() -> None:
    box = signing.SecretBox(signing.encryption_key("", "local"))
    sealed = box.seal("w-1", "whsec_abc")
    assert b"whsec_abc" not in sealed
    assert box.open("w-1", sealed) == "whsec_abc"
    with pytest.raises(InvalidTag):
        box.open("w-2", sealed)  # a ciphertext moved to another webhook does not open
    with pytest.raises(signing.SecretKeyConfigError):
        signing.encryption_key("", "production")
    key = base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
    assert signing.encryption_key(key, "production") == bytes(range(32))


# ---------------------------------------------------------------------------- notifications


def _order_update(status: int, *, with_fill: bool) -> execution_events.OrderStatusChanged:
    order = execution_types.Order(
        order_id="0190a0b0-0000-7000-8000-000000000001",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        quantity=decimal_pb2.Decimal(value="0.5"),
        status=status,  # type: ignore[arg-type]
        reject_reason="",
    )
    update = execution_events.OrderStatusChanged(order_id=order.order_id, symbol="BTC-USD", order=order)
    if with_fill:
        update.fill.CopyFrom(
            execution_types.Fill(
                symbol="BTC-USD",
                side=types_pb2.SIDE_BUY,
                quantity=decimal_pb2.Decimal(value="0.5"),
                price=decimal_pb2.Decimal(value="64210.50"),
            )
        )
    return update


def test_order_updates_read_as_order_or_fill() -> None:
    filled = domain.reading(
        domain.ORDER_STATUS_CHANGED, _order_update(execution_types.ORDER_STATUS_FILLED, with_fill=True)
    )
    assert filled == domain.Reading(
        pb.NOTIFICATION_KIND_FILL, pb.SEVERITY_INFO, "Order filled", "Bought 0.5 BTC-USD at 64210.50"
    )
    rejected = domain.reading(
        domain.ORDER_STATUS_CHANGED, _order_update(execution_types.ORDER_STATUS_REJECTED, with_fill=False)
    )
    assert rejected is not None
    assert (rejected.kind, rejected.severity, rejected.title) == (
        pb.NOTIFICATION_KIND_ORDER,
        pb.SEVERITY_WARNING,
        "Order rejected",
    )


def test_risk_and_portfolio_events_read_with_severity() -> None:
    halted = risk_events.TradingStateChanged(state=risk_types.TRADING_STATE_HALTED, reason="kill switch")
    read = domain.reading(domain.TRADING_STATE_CHANGED, halted)
    assert read is not None and (read.kind, read.severity) == (
        pb.NOTIFICATION_KIND_RISK,
        pb.SEVERITY_CRITICAL,
    )
    assert "kill switch" in read.body
    opened = portfolio_events.PositionChanged(symbol="ETH-USD")
    opened.previous_quantity.value = "0"
    opened.position.quantity.value = "2"
    read = domain.reading(domain.POSITION_CHANGED, opened)
    assert read == domain.Reading(
        pb.NOTIFICATION_KIND_PORTFOLIO, pb.SEVERITY_INFO, "Position opened", "ETH-USD: 0 -> 2"
    )
    assert (
        domain.reading("trading.portfolio.v1.PortfolioSnapshot", portfolio_events.PortfolioSnapshot()) is None
    )


def test_notification_carries_the_event_and_filters_apply() -> None:
    payload = _order_update(execution_types.ORDER_STATUS_FILLED, with_fill=True)
    envelope = new_envelope(payload, tenant_id="t1", correlation_id="c-1", producer="execution")
    notification = domain.to_notification(envelope, payload)
    assert notification is not None
    assert (notification.event_id, notification.event_type, notification.correlation_id) == (
        envelope.event_id,
        domain.ORDER_STATUS_CHANGED,
        "c-1",
    )
    assert notification.payload == envelope.payload and notification.occurred_at == envelope.occurred_at
    assert domain.wanted(notification, set(), 0)
    assert domain.wanted(notification, {pb.NOTIFICATION_KIND_FILL}, pb.SEVERITY_INFO)
    assert not domain.wanted(notification, {pb.NOTIFICATION_KIND_RISK}, 0)
    assert not domain.wanted(notification, set(), pb.SEVERITY_WARNING)


def test_webhook_event_type_filter() -> None:
    assert domain.webhook_wants((), domain.RISK_ALERT)
    assert domain.webhook_wants((domain.RISK_ALERT,), domain.RISK_ALERT)
    assert not domain.webhook_wants((domain.RISK_ALERT,), domain.POSITION_CHANGED)
    assert not domain.webhook_wants((), "trading.marketdata.v1.Tick")


def test_stream_subjects_are_the_tenants_own() -> None:
    assert tenant_subjects("t-42") == [
        "execution.orders.t-42.*",
        "portfolio.positions.t-42",
        "risk.events.t-42",
    ]


def test_webhooks_get_events_from_their_registration_on() -> None:
    from datetime import UTC, datetime, timedelta

    created = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert domain.after_registration(created, created + timedelta(seconds=1))
    assert domain.after_registration(created, created - timedelta(seconds=2))  # clock skew
    assert not domain.after_registration(created, created - timedelta(hours=1))  # a backlog
    assert domain.after_registration(created, None)


@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda scheme, rest: f"{scheme}://{rest}",
            st.sampled_from(["http", "https"]),
            st.text(max_size=120),
        ),
    )
)
@settings(max_examples=500, deadline=None)
def test_any_text_is_a_target_or_a_refusal_never_a_crash(url: str) -> None:
    try:
        target = parse_target(url, allow_http=True)
    except TargetRefusedError as exc:
        assert exc.reason.startswith("WEBHOOK_URL_") and exc.description
        return
    assert target.scheme in ("http", "https") and target.host and 0 <= target.port <= 65535
    assert target.host_header
