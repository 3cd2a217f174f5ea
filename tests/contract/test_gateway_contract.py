"""Every annotated RPC of proto/, called through the running gateway process
of the platform (`./dev run`'s supervisor): routes are enumerated from the
descriptors, never listed by hand.

For each RPC binding:
* a request synthesized from the request message and its protovalidate rules
  is answered with 200 (its JSON valid against /openapi.json's response
  schema), 501 problem+json for RPCs not built yet, or a problem+json with a
  business code: never a 5xx transport error, never "no such route";
* an unknown member in the body / query string is a 400 problem+json with a
  pointer to it (the gateway's own check);
* a value breaking a field's protovalidate rule is a 400 problem+json whose
  field violations name that field (the service's check, which also runs for
  unbuilt RPCs).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from buf.validate import validate_pb2
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from gateway.routes import Route, build_routes
from gateway.templates import openapi_path
from gateway.transcode import FD, FieldDesc
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from services.identity.apikeys import ApiKeyPrincipal, new_secret, publish, withdraw
from services.identity.domain import token_hash
from services.identity.seed import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG
from tests.contract.conftest import RunningPlatform

pytestmark = pytest.mark.integration

ROUTES = build_routes()
BUSINESS_CODES = {
    "NOT_FOUND",
    "FAILED_PRECONDITION",
    "PERMISSION_DENIED",
    "ALREADY_EXISTS",
    "INVALID_ARGUMENT",
    "UNAUTHENTICATED",
    "OUT_OF_RANGE",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
}
PROBLEM = "application/problem+json"


def _rules(f: FieldDesc) -> validate_pb2.FieldRules | None:
    options = f.GetOptions()
    return options.Extensions[validate_pb2.field] if options.HasExtension(validate_pb2.field) else None


def _from_regex(pattern: str, min_len: int) -> str:
    try:
        return str(hypothesis_find(pattern, min_len))
    except NoSuchExample:
        return "x" * max(1, min_len)


def hypothesis_find(pattern: str, min_len: int) -> str:
    from hypothesis import find, settings

    found: str = find(
        st.from_regex(pattern, fullmatch=True),
        lambda s: len(s) >= max(min_len, 3) and "\n" not in s,
        settings=settings(database=None, max_examples=2000),
    )
    return found


def sample_scalar(f: FieldDesc, rules: validate_pb2.FieldRules | None) -> Any:
    kind = rules.WhichOneof("type") if rules is not None else None
    if f.type == FD.TYPE_ENUM:
        banned = set(rules.enum.not_in) if rules is not None and kind == "enum" else set()
        allowed = set(getattr(rules.enum, "in")) if rules is not None and kind == "enum" else set()
        for v in f.enum_type.values:
            if v.number != 0 and v.number not in banned and (not allowed or v.number in allowed):
                return v.name
        return f.enum_type.values[0].name
    if f.type == FD.TYPE_STRING:
        s = rules.string if rules is not None and kind == "string" else None
        if s is None:
            return "sample"
        if s.uuid:
            return str(uuid.uuid4())
        if s.email:
            return "someone@example.com"
        if getattr(s, "in"):
            return next(iter(getattr(s, "in")))
        min_len = s.min_len if s.HasField("min_len") else 1
        if s.HasField("pattern"):
            return _from_regex(s.pattern, min_len)
        return "s" * max(min_len, 1)
    if f.type == FD.TYPE_BOOL:
        return False
    if f.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return 1.0
    if f.type == FD.TYPE_BYTES:
        return ""
    numeric = getattr(rules, kind) if rules is not None and kind else None
    if numeric is not None and numeric.HasField("gte"):
        return int(numeric.gte)
    if numeric is not None and numeric.HasField("gt"):
        return int(numeric.gt) + 1
    return 1


def sample_message(desc: Any, depth: int = 0) -> dict[str, Any]:
    """A request that satisfies the field rules that can be read from the descriptor."""
    out: dict[str, Any] = {}
    chosen_oneofs: set[str] = set()
    for f in desc.fields:
        rules = _rules(f)
        oneof = f.containing_oneof
        if oneof is not None and not oneof.name.startswith("_"):
            required = (
                oneof.GetOptions().HasExtension(validate_pb2.oneof)
                and oneof.GetOptions().Extensions[validate_pb2.oneof].required
            )
            if not required or oneof.name in chosen_oneofs:
                continue
            chosen_oneofs.add(oneof.name)
        elif rules is None or rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE:
            continue
        value = sample_field(f, rules, depth)
        if value is not None:
            out[f.json_name] = value
    return out


def sample_field(f: FieldDesc, rules: validate_pb2.FieldRules | None, depth: int) -> Any:
    if f.is_repeated:
        if f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            return None
        count = (
            rules.repeated.min_items if rules is not None and rules.WhichOneof("type") == "repeated" else 0
        )
        item_rules = rules.repeated.items if rules is not None and count else None
        return [sample_single(f, item_rules, depth, i) for i in range(count)] or None
    return sample_single(f, rules, depth, 0)


def sample_single(f: FieldDesc, rules: validate_pb2.FieldRules | None, depth: int, index: int) -> Any:
    if f.type != FD.TYPE_MESSAGE:
        value = sample_scalar(f, rules)
        return f"{value}{index}" if index and isinstance(value, str) else value
    name = f.message_type.full_name
    if name == "google.protobuf.Timestamp":
        return (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if name == "google.protobuf.Duration":
        return "1s"
    if name == "trading.common.v1.Decimal":
        return {"value": "1"}
    if depth > 3:
        return {}
    return sample_message(f.message_type, depth + 1)


def split_request(route: Route, doc: dict[str, Any]) -> tuple[str, list[tuple[str, str]], Any]:
    """URL path, query parameters and body of a request document for one binding."""
    req = route.request_class.DESCRIPTOR
    doc = dict(doc)
    path = openapi_path(route.template)
    for var in route.template.variables:
        f = req.fields_by_name[var.field_path]
        if f.containing_oneof is not None:  # the path picks the oneof member
            for other in f.containing_oneof.fields:
                if other is not f:
                    doc.pop(other.json_name, None)
        value = doc.pop(f.json_name, None)
        if value is None:
            value = sample_scalar(f, _rules(f))
        path = path.replace("{" + var.field_path + "}", quote(str(value), safe=""))
    if route.body == "*":
        return path, [], doc
    body = None
    if route.body:
        body = doc.pop(req.fields_by_name[route.body].json_name, {})
    query: list[tuple[str, str]] = []

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, list):
            for v in value:
                flatten(prefix, v)
        else:
            query.append((prefix, json.dumps(value) if isinstance(value, bool) else str(value)))

    flatten("", doc)
    return path, query, body


def _all_scopes() -> frozenset[str]:
    return frozenset({s for r in ROUTES for s in r.policy.scopes} | {"admin"})


async def _call(
    gw: httpx.AsyncClient, route: Route, path: str, query: Any, body: Any, headers: Any
) -> httpx.Response:
    if route.streaming:
        async with gw.stream(route.http_method, path, params=query, headers=headers) as r:
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                return httpx.Response(r.status_code, headers=r.headers, content=b"")
            await r.aread()
            return r
    if route.body:
        return await gw.request(route.http_method, path, params=query, json=body, headers=headers)
    return await gw.request(route.http_method, path, params=query, headers=headers)


def _schema_validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    import openapi_schema_validator as validators

    return validators.OAS31Validator({**schema, "components": document["components"]})


@pytest.fixture
async def caller(platform: RunningPlatform) -> Any:
    # The demo user's tenant and id (real rows in identity), with every scope
    # the contracts declare: an API key as identity's cache holds it.
    base = f"http://127.0.0.1:{platform.settings.gateway.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as gw:
        login = await gw.post(
            "/v1/auth/login", json={"tenantSlug": DEMO_SLUG, "email": DEMO_EMAIL, "password": DEMO_PASSWORD}
        )
    assert login.status_code == 200, login.text
    redis = open_redis(platform.settings, REDIS_ADMIN)
    secret = new_secret()
    principal = ApiKeyPrincipal(
        str(uuid.uuid4()),
        login.json()["tenantId"],
        login.json()["userId"],
        _all_scopes(),
        frozenset({"ADMIN", "TRADER"}),
        None,
    )
    await publish(redis, token_hash(secret), principal, now=time.time())
    try:
        yield {"X-Api-Key": secret}
    finally:
        await withdraw(redis, token_hash(secret))
        await redis.aclose()


async def test_every_annotated_rpc_through_the_gateway(
    platform: RunningPlatform, caller: dict[str, str]
) -> None:
    base = f"http://127.0.0.1:{platform.settings.gateway.http_port}"
    outcomes: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base, timeout=20) as gw:
        document = (await gw.get("/openapi.json")).json()
        for route in ROUTES:
            name = f"{route.http_method} {route.template.template}"
            path, query, body = split_request(route, sample_message(route.request_class.DESCRIPTOR))
            r = await _call(gw, route, path, query, body, caller)
            assert r.headers.get("x-correlation-id"), name
            if r.status_code == 200:
                if not route.streaming:
                    op = document["paths"][openapi_path(route.template)][route.http_method.lower()]
                    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
                    _schema_validator(document, schema).validate(r.json())
                outcomes[name] = "200"
                continue
            assert r.headers["content-type"] == PROBLEM, (name, r.status_code, r.text)
            problem = r.json()
            assert problem["status"] == r.status_code and problem["correlationId"], name
            if r.status_code == 501:
                assert problem["code"] == "UNIMPLEMENTED" and problem.get("reason") == "NOT_BUILT_YET", (
                    name,
                    problem,
                )
            else:
                assert problem["code"] in BUSINESS_CODES, (name, problem)
                assert problem.get("reason") != "ROUTE_NOT_FOUND", name
            outcomes[name] = f"{r.status_code} {problem['code']}"
    print("\n".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    assert len(outcomes) == len(ROUTES)
    assert sum(v == "200" for v in outcomes.values()) >= 10, outcomes


def _bad_value_field(route: Route) -> FieldDesc | None:
    """A top-level string field with a pattern/uuid/email rule (path variables first)."""
    req = route.request_class.DESCRIPTOR
    bound = [
        req.fields_by_name[v.field_path]
        for v in route.template.variables
        if v.field_path in req.fields_by_name
    ]
    for f in [*bound, *req.fields]:
        rules = _rules(f)
        if f.is_repeated or f.type != FD.TYPE_STRING or rules is None or rules.WhichOneof("type") != "string":
            continue
        if rules.string.HasField("pattern") or rules.string.uuid or rules.string.email:
            return f
    return None


async def test_bad_input_to_every_rpc_is_a_400_with_pointers(
    platform: RunningPlatform, caller: dict[str, str]
) -> None:
    base = f"http://127.0.0.1:{platform.settings.gateway.http_port}"
    checked_by_service = 0
    async with httpx.AsyncClient(base_url=base, timeout=20) as gw:
        for route in ROUTES:
            name = f"{route.http_method} {route.template.template}"
            doc = sample_message(route.request_class.DESCRIPTOR)
            path, query, body = split_request(route, doc)
            # 1. an unknown member: the gateway's check, with a pointer.
            if route.body == "*":
                r = await _call(gw, route, path, query, {**body, "notAField": 1}, caller)
                expected = "/notAField"
            else:
                r = await _call(gw, route, path, [*query, ("notAField", "1")], body, caller)
                expected = "/notAField"
            assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, (name, r.text)
            assert [v["pointer"] for v in r.json()["fieldViolations"]] == [expected], name
            # 2. a value breaking a protovalidate rule: the service's check.
            field = _bad_value_field(route)
            is_path = field is not None and any(v.field_path == field.name for v in route.template.variables)
            if field is None or (
                field.containing_oneof is not None and field.json_name not in doc and not is_path
            ):
                continue
            bad = {**doc, field.json_name: "!! not valid !!"}
            path, query, body = split_request(route, bad)
            r = await _call(gw, route, path, query, body, caller)
            assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, (name, r.text)
            fields = [v["field"] for v in r.json().get("fieldViolations", [])]
            assert field.name in fields, (name, r.json())
            checked_by_service += 1
    assert checked_by_service >= 10
