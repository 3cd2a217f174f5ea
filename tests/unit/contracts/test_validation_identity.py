"""The protovalidate rules of trading.identity.v1 accept good input and name the
right field (and rule) for bad input, as the gateway will report it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from trading.identity.v1 import events_pb2 as ev
from trading.identity.v1 import identity_service_pb2 as pb

from runtime import contracts
from tests.support.validation import violations

UUID = "0190f1a2-7b3c-7def-8123-456789abcdef"


def login() -> pb.LoginRequest:
    return pb.LoginRequest(tenant_slug="acme-capital", email="ada@acme.example", password="correct horse")


def create_user() -> pb.CreateUserRequest:
    return pb.CreateUserRequest(
        email="grace@acme.example",
        display_name="Grace",
        password="a-long-enough-password",
        roles=[pb.ROLE_TRADER, pb.ROLE_VIEWER],
    )


def create_api_key() -> pb.CreateApiKeyRequest:
    return pb.CreateApiKeyRequest(name="research-bot", scopes=["marketdata:read", "orders:write"])


VALID: list[Callable[[], Message]] = [
    login,
    create_user,
    create_api_key,
    lambda: pb.RefreshTokenRequest(refresh_token="r" * 43),
    lambda: pb.LogoutRequest(refresh_token="r" * 43, all_sessions=True),
    lambda: pb.GetJwksRequest(),
    lambda: pb.RevokeApiKeyRequest(api_key_id=UUID),
    lambda: pb.ListApiKeysRequest(),
    lambda: pb.ListUsersRequest(page_size=500, page_token="abc"),
    lambda: pb.CreateTenantRequest(
        slug="acme", display_name="Acme", admin_email="root@acme.example", admin_password="x" * 12
    ),
    lambda: pb.GetTenantRequest(tenant_id=UUID),
    lambda: pb.GetUserRequest(user_id=UUID),
    lambda: pb.UpdateUserRolesRequest(user_id=UUID, roles=[pb.ROLE_ADMIN]),
]


@pytest.mark.parametrize("make", VALID, ids=lambda f: type(f()).__name__)
def test_valid_requests_pass(make: Callable[[], Message]) -> None:
    assert violations(make()) == set()


def _with(make: Callable[[], Message], **changes: object) -> Message:
    msg = make()
    for name, value in changes.items():
        if isinstance(value, list):
            msg.ClearField(name)
            getattr(msg, name).extend(value)
        elif isinstance(value, Message):
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


BAD: list[tuple[str, Message, tuple[str, str]]] = [
    ("upper-case slug", _with(login, tenant_slug="Acme"), ("tenant_slug", "string.pattern")),
    ("slug ends with dash", _with(login, tenant_slug="acme-"), ("tenant_slug", "string.pattern")),
    ("not an e-mail", _with(login, email="ada"), ("email", "string.email")),
    ("empty password", _with(login, password=""), ("password", "string.min_len")),
    ("short new password", _with(create_user, password="short"), ("password", "string.min_len")),
    ("no roles", _with(create_user, roles=[]), ("roles", "repeated.min_items")),
    ("UNSPECIFIED role", _with(create_user, roles=[pb.ROLE_UNSPECIFIED]), ("roles[0]", "enum.not_in")),
    ("undefined role", _with(create_user, roles=[99]), ("roles[0]", "enum.defined_only")),
    (
        "duplicate roles",
        _with(create_user, roles=[pb.ROLE_ADMIN, pb.ROLE_ADMIN]),
        ("roles", "repeated.unique"),
    ),
    ("bad scope", _with(create_api_key, scopes=["Orders:Write"]), ("scopes[0]", "string.pattern")),
    ("no scopes", _with(create_api_key, scopes=[]), ("scopes", "repeated.min_items")),
    ("empty key name", _with(create_api_key, name=""), ("name", "string.min_len")),
    (
        "expiry in the past",
        _with(create_api_key, expires_at=timestamp_pb2.Timestamp(seconds=1)),
        ("expires_at", "timestamp.gt_now"),
    ),
    ("non-uuid key id", pb.RevokeApiKeyRequest(api_key_id="42"), ("api_key_id", "string.uuid")),
    ("non-uuid user id", pb.GetUserRequest(user_id="alice"), ("user_id", "string.uuid")),
    ("page_size 10000", pb.ListUsersRequest(page_size=10000), ("page_size", "int32.gte_lte")),
    ("negative page_size", pb.ListTenantsRequest(page_size=-1), ("page_size", "int32.gte_lte")),
    ("logout without token", pb.LogoutRequest(all_sessions=True), ("refresh_token", "string.min_len")),
]


@pytest.mark.parametrize(("case", "msg", "expected"), BAD, ids=[c[0] for c in BAD])
def test_bad_requests_name_the_field(case: str, msg: Message, expected: tuple[str, str]) -> None:
    assert expected in violations(msg), case


def test_secrets_are_redacted_in_debug_output() -> None:
    """Passwords, tokens and API key secrets carry debug_redact, so logging a
    message never prints them."""
    redacted = {
        (m.name, f.name)
        for m in pb.DESCRIPTOR.message_types_by_name.values()
        for f in m.fields
        if f.GetOptions().debug_redact
    }
    assert {
        ("LoginRequest", "password"),
        ("CreateUserRequest", "password"),
        ("CreateTenantRequest", "admin_password"),
        ("RefreshTokenRequest", "refresh_token"),
        ("LogoutRequest", "refresh_token"),
        ("AuthTokens", "access_token"),
        ("AuthTokens", "refresh_token"),
        ("CreateApiKeyResponse", "secret"),
    } <= redacted


def test_events_carry_no_secrets_and_route_to_the_identity_topic() -> None:
    registry = contracts.event_registry()
    for name in ("TenantCreated", "UserCreated", "UserRolesChanged", "ApiKeyCreated", "ApiKeyRevoked"):
        descriptor = ev.DESCRIPTOR.message_types_by_name[name]
        route = registry.route(descriptor.full_name)
        assert route.kafka_topic == "trading.identity.events"
        assert route.partition_key == "tenant"
        fields = set(descriptor.fields_by_name)
        assert not fields & {"password", "secret", "secret_hash", "password_hash", "refresh_token"}, name


def test_public_rpcs_are_exactly_login_refresh_logout_and_jwks() -> None:
    service = pb.DESCRIPTOR.services_by_name["IdentityService"]
    public = {
        m.name for m in service.methods if contracts.method_policy(contracts.full_method_name(m)).public
    }
    assert public == {"Login", "RefreshToken", "Logout", "GetJwks"}


def test_event_payload_validation() -> None:
    created_at = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    ok = ev.ApiKeyRevoked(api_key_id=UUID, owner_user_id=UUID, revoked_at=created_at)
    assert violations(ok) == set()
    assert ("revoked_at", "required") in violations(ev.ApiKeyRevoked(api_key_id=UUID, owner_user_id=UUID))
