"""OpenAPI 3.1 document generated from the route table and the descriptors.

Schemas come from the messages (proto3 JSON names and types: int64 as
strings, enums by name, Timestamps as date-time strings) with protovalidate
rules turned into JSON Schema constraints where the mapping is direct
(string length/pattern/uuid/email, numeric bounds, repeated item counts,
enum values allowed). CEL rules are not translated (the service still
enforces them and answers 400 with field violations).

Required: a field is required exactly when the server refuses its absence.
proto3 JSON reads a missing field as its zero value, so a field is required
when protovalidate rejects the zero value of that field (``required``, a
pattern "" does not match, an enum's ``not_in: [0]``, ...): found by
validating an empty message with the validator the services use, not by
re-implementing the rules. A field that a path parameter binds is not part
of the body (the server refuses it there), so such bodies get their own
schema without it.

Descriptions are the contract's comments (gen/python/src/trading/contract_docs.json,
written by `./dev gen`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import protovalidate
from buf.validate import validate_pb2
from google.protobuf import message_factory

from gateway.problems import HTTP_STATUS, PROBLEM_CONTENT_TYPE, PROBLEM_SCHEMA
from gateway.routes import Route
from gateway.streams import LAST_EVENT_ID, resumable
from gateway.templates import openapi_path
from gateway.transcode import FD, FLOAT_SPECIALS, INT_RANGES, FieldDesc, MessageDesc

_INT32 = {FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32, FD.TYPE_UINT32, FD.TYPE_FIXED32}
_INT64 = {FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64, FD.TYPE_UINT64, FD.TYPE_FIXED64}
_RULES_BY_TYPE = {
    FD.TYPE_INT32: "int32",
    FD.TYPE_SINT32: "sint32",
    FD.TYPE_SFIXED32: "sfixed32",
    FD.TYPE_UINT32: "uint32",
    FD.TYPE_FIXED32: "fixed32",
    FD.TYPE_INT64: "int64",
    FD.TYPE_SINT64: "sint64",
    FD.TYPE_SFIXED64: "sfixed64",
    FD.TYPE_UINT64: "uint64",
    FD.TYPE_FIXED64: "fixed64",
    FD.TYPE_FLOAT: "float",
    FD.TYPE_DOUBLE: "double",
}
_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"]},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "integer", "null"]},
    "google.protobuf.UInt64Value": {"type": ["string", "integer", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
}


@functools.cache
def contract_docs() -> dict[str, str]:
    """The contract's comments by full name (empty when the file is missing)."""
    try:
        text = resources.files("trading").joinpath("contract_docs.json").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    docs: dict[str, str] = json.loads(text)
    return docs


_VALIDATOR = protovalidate.Validator()


@functools.cache
def zero_refused(desc: MessageDesc) -> frozenset[str]:
    """Names of the fields whose zero value (what a missing JSON member reads
    as) protovalidate refuses: the fields a request must carry."""
    empty = message_factory.GetMessageClass(desc)()
    names: set[str] = set()
    for violation in _VALIDATOR.collect_violations(empty):
        path = violation.proto.field
        if path is not None and len(path.elements) == 1:
            names.add(path.elements[0].field_name)
    return frozenset(names)


def _described(schema: dict[str, Any], full_name: str) -> dict[str, Any]:
    text = contract_docs().get(full_name)
    if text:
        schema["description"] = text
    return schema


def _rules(f: FieldDesc) -> validate_pb2.FieldRules | None:
    options = f.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return None
    rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.field]
    return rules


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


# CEL rules of the contract that JSON Schema can state exactly, by rule id
# (the ids are part of the contract: tests pin each translation against the
# validator). Rules comparing fields with each other (time_range.ordered,
# verify_chain.range_ordered, pnl_series.max_points,
# query_events.aggregate_id_needs_type) have no JSON Schema form; the server
# still answers 400 for them.
_NO_NUL = r"^[^\x00]*$"
_UNSIGNED_DECIMAL = r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,12})?$"
_POSITIVE_DECIMAL = r"^(?=[0-9.]*[1-9])(0|[1-9][0-9]{0,17})(\.[0-9]{1,12})?$"


def _decimal(pattern: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def schema(_: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "title": "Decimal",
            "properties": {"value": {"type": "string", "pattern": pattern}},
            "required": ["value"],
            "additionalProperties": False,
        }

    return schema


def _http_url(schema: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": [schema, {"type": "string", "pattern": "^https?://"}]}


def _bounded(schema: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": [schema, {"required": ["start", "end"]}]}


_FIELD_CEL: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "decimal.positive": _decimal(_POSITIVE_DECIMAL),
    "decimal.non_negative": _decimal(_UNSIGNED_DECIMAL),
    "webhook.url_scheme": _http_url,
    "time_range.bounded": _bounded,
}


def _limit_price_by_type(type_field: str) -> dict[str, Any]:
    """A limit price exactly for LIMIT orders (absent for MARKET; anything without a type)."""
    return {
        "allOf": [
            {
                "if": {"properties": {type_field: {"const": "ORDER_TYPE_LIMIT"}}, "required": [type_field]},
                "then": {"required": ["limitPrice"]},
            },
            {
                "if": {"properties": {type_field: {"const": "ORDER_TYPE_MARKET"}}, "required": [type_field]},
                "then": {"not": {"required": ["limitPrice"]}},
            },
        ]
    }


_MESSAGE_CEL: dict[str, dict[str, Any]] = {
    # Both of PlaceOrder's rules in one: the second id adds the same statement.
    "place_order.limit_price_required": _limit_price_by_type("type"),
    "place_order.limit_price_forbidden": {},
    "check_order.limit_price": _limit_price_by_type("orderType"),
}


def _bounded_range(numeric: Any, low: int, high: int) -> tuple[int, int]:
    """[low, high] narrowed by protovalidate's integer bounds."""
    if numeric.HasField("const"):
        return numeric.const, numeric.const
    if numeric.HasField("gte"):
        low = max(low, numeric.gte)
    if numeric.HasField("gt"):
        low = max(low, numeric.gt + 1)
    if numeric.HasField("lte"):
        high = min(high, numeric.lte)
    if numeric.HasField("lt"):
        high = min(high, numeric.lt - 1)
    return low, high


def _same_length(lo: str, hi: str) -> list[str]:
    """Alternatives matching every digit string from `lo` to `hi` (same length)."""
    if lo == hi:
        return [lo]
    if len(lo) == 1:
        return [f"[{lo}-{hi}]"]
    rest = len(lo) - 1
    if lo[1:] == "0" * rest and hi[1:] == "9" * rest:
        return [f"[{lo[0]}-{hi[0]}][0-9]{{{rest}}}"]
    if lo[0] == hi[0]:
        return [lo[0] + p for p in _same_length(lo[1:], hi[1:])]
    parts = [lo[0] + p for p in _same_length(lo[1:], "9" * rest)]
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}][0-9]{{{rest}}}")
    parts += [hi[0] + p for p in _same_length("0" * rest, hi[1:])]
    return parts


def _non_negative(lo: int, hi: int) -> list[str]:
    """Alternatives matching the canonical decimals of lo..hi (0 <= lo <= hi)."""
    parts: list[str] = []
    for digits in range(len(str(lo)), len(str(hi)) + 1):
        start = max(lo, 10 ** (digits - 1) if digits > 1 else 0)
        end = min(hi, 10**digits - 1)
        if start <= end:
            parts += _same_length(str(start), str(end))
    return parts


def integer_pattern(low: int, high: int) -> str:
    """A regular expression matching exactly the canonical decimal texts of
    the integers low..high (no leading zeros; "-0" is 0), as the gateway reads them."""
    parts: list[str] = []
    if low < 0:
        parts += ["-" + p for p in _non_negative(max(1, -high), -low)]
    if high >= 0:
        parts += _non_negative(max(0, low), high)
    if low <= 0 <= high:
        parts.append("-0")
    return "^(" + "|".join(parts) + ")$"


# Rules a service applies beyond its request's protovalidate rules, by RPC:
# they depend on server state or deployment policy, so no schema can state
# them (a schema-valid request can still be refused with 400 for these).
_SERVER_RULES: dict[str, tuple[str, ...]] = {
    "trading.decision.v1.DecisionService.SetStrategy": (
        "spec.model_ids: models loaded by the service (ListModels)",
        "spec.symbols: instruments the platform lists (ListInstruments)",
    ),
    "trading.notification.v1.NotificationService.RegisterWebhook": (
        "url: resolves to a public address; http only where the deployment allows it",
    ),
}
# Every list RPC: a page token is one the server issued (nextPageToken).
_PAGE_TOKEN_RULE = "page_token: a nextPageToken this server issued for the same query"


def untranslated_rules(desc: MessageDesc, seen: frozenset[str] = frozenset()) -> list[str]:
    """Rule ids of `desc` (and the messages it holds) that the schema does not
    state: CEL comparing fields with each other or with the clock, and the
    rules on durations and timestamps."""
    if desc.full_name in seen or desc.full_name in _WKT:
        return []
    seen = seen | {desc.full_name}
    found: list[str] = []
    options = desc.GetOptions()
    if options.HasExtension(validate_pb2.message):
        found += [r.id for r in options.Extensions[validate_pb2.message].cel if r.id not in _MESSAGE_CEL]
    for f in desc.fields:
        rules = _rules(f)
        if rules is not None:
            found += [r.id for r in rules.cel if r.id not in _FIELD_CEL]
            kind = rules.WhichOneof("type")
            if kind in ("duration", "timestamp"):
                found.append(f"{f.name}: {kind} rules")
        if f.type == FD.TYPE_MESSAGE and not f.message_type.GetOptions().map_entry:
            found += untranslated_rules(f.message_type, seen)
    return sorted(set(found))


class SchemaBuilder:
    """Collects component schemas of every message reachable from the routes."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}

    def message_ref(self, desc: MessageDesc) -> dict[str, Any]:
        if desc.full_name in _WKT:
            return dict(_WKT[desc.full_name])
        if desc.full_name not in self.schemas:
            self.schemas[desc.full_name] = {}  # placeholder: recursion stops here
            self.schemas[desc.full_name] = self._message(desc)
        return _ref(desc.full_name)

    def body_ref(self, desc: MessageDesc, bound: frozenset[str]) -> dict[str, Any]:
        """The request message as a body: without the fields path parameters bind."""
        if not bound:
            return self.message_ref(desc)
        # One per set of bound fields (CancelOrder's body differs by route).
        name = f"{desc.full_name}.BodyWithout.{'.'.join(sorted(bound))}"
        if name not in self.schemas:
            self.schemas[name] = self._message(desc, leave_out=bound)
            self.schemas[name]["title"] = f"{desc.name} (body; {', '.join(sorted(bound))} in the path)"
        return _ref(name)

    def _message(self, desc: MessageDesc, leave_out: frozenset[str] = frozenset()) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        refused = zero_refused(desc)
        for f in desc.fields:
            if f.name in leave_out:
                continue
            properties[f.json_name] = _described(self.field_schema(f), f.full_name)
            if f.name in refused:
                required.append(f.json_name)
        # Closed: the server refuses a member it does not know (400 unknown_field).
        # (It also takes the proto field names, as proto3 JSON parsers must;
        # the document names the JSON ones only, which is what it sends back.)
        schema: dict[str, Any] = {
            "type": "object",
            "title": desc.name,
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            schema["required"] = required
        options = desc.GetOptions()
        if options.HasExtension(validate_pb2.message):
            extra = [
                _MESSAGE_CEL[rule.id]
                for rule in options.Extensions[validate_pb2.message].cel
                if _MESSAGE_CEL.get(rule.id)
            ]
            if extra:
                schema["allOf"] = extra
        return _described(schema, desc.full_name)

    def field_schema(self, f: FieldDesc, *, text: bool = False) -> dict[str, Any]:
        rules = _rules(f)
        if f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            key, value = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            on_map = rules.map if rules is not None and rules.WhichOneof("type") == "map" else None
            key_rules = on_map.keys if on_map is not None and on_map.HasField("keys") else None
            value_rules = on_map.values if on_map is not None and on_map.HasField("values") else None
            schema: dict[str, Any] = {
                "type": "object",
                "additionalProperties": self.single(value, value_rules),
            }
            if key_rules is not None:
                schema["propertyNames"] = self.single(key, key_rules)
            if on_map is not None and on_map.HasField("min_pairs"):
                schema["minProperties"] = on_map.min_pairs
            if on_map is not None and on_map.HasField("max_pairs"):
                schema["maxProperties"] = on_map.max_pairs
            return schema
        if f.is_repeated:
            schema = {"type": "array"}
            items_rules = None
            if rules is not None and rules.WhichOneof("type") == "repeated":
                rep = rules.repeated
                if rep.HasField("min_items"):
                    schema["minItems"] = rep.min_items
                if rep.HasField("max_items"):
                    schema["maxItems"] = rep.max_items
                if rep.unique:
                    schema["uniqueItems"] = True
                items_rules = rep.items if rep.HasField("items") else None
            schema["items"] = self.single(f, items_rules, text=text)
            return schema
        return self.single(f, rules, text=text)

    def single(
        self, f: FieldDesc, rules: validate_pb2.FieldRules | None, *, text: bool = False
    ) -> dict[str, Any]:
        """One value of `f`; `text`: as a path or query parameter (numbers as text)."""
        schema = self._single(f, rules, text)
        for rule in rules.cel if rules is not None else ():
            translate = _FIELD_CEL.get(rule.id)
            if translate is not None:
                schema = translate(schema)
        return schema

    def _single(self, f: FieldDesc, rules: validate_pb2.FieldRules | None, text: bool) -> dict[str, Any]:
        t = f.type
        kind = rules.WhichOneof("type") if rules is not None else None
        if t == FD.TYPE_MESSAGE:
            return self.message_ref(f.message_type)
        if t == FD.TYPE_ENUM:
            names = [v.name for v in f.enum_type.values]
            if rules is not None and kind == "enum":
                banned = {v.name for v in f.enum_type.values if v.number in set(rules.enum.not_in)}
                allowed = set(getattr(rules.enum, "in"))
                if allowed:
                    names = [v.name for v in f.enum_type.values if v.number in allowed]
                names = [n for n in names if n not in banned]
            return {"type": "string", "enum": names}
        if t == FD.TYPE_STRING:
            return self._string(rules if kind == "string" else None, rules)
        if t == FD.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if t == FD.TYPE_BOOL:
            return {"type": "boolean"}
        numeric = (
            getattr(rules, kind)
            if rules is not None and kind is not None and kind == _RULES_BY_TYPE.get(t)
            else None
        )
        if t in _INT32 or t in _INT64:
            low, high = INT_RANGES[t]
            if numeric is not None:
                low, high = _bounded_range(numeric, low, high)
            number: dict[str, Any] = {
                "type": "integer",
                "format": "int32" if t in _INT32 else "int64",
                "minimum": low,
                "maximum": high,
            }
            if text:
                return number
            # proto3 JSON: a number or the same integer as a string (how int64 is written back).
            either = {"anyOf": [number, {"type": "string", "pattern": integer_pattern(low, high)}]}
            if (low, high) != INT_RANGES[t]:
                return either
            # The full range of a type: one shared component (the int64 pattern is long).
            name = ("Int" if low < 0 else "UInt") + ("32" if t in _INT32 else "64")
            self.schemas.setdefault(name, {"title": name, **either})
            return _ref(name)
        schema: dict[str, Any] = {"type": "number"}
        bounded = False
        if numeric is not None:
            for proto_name, json_name in (
                ("gte", "minimum"),
                ("gt", "exclusiveMinimum"),
                ("lte", "maximum"),
                ("lt", "exclusiveMaximum"),
            ):
                if numeric.HasField(proto_name):
                    schema[json_name] = getattr(numeric, proto_name)
                    bounded = True
        if bounded or text:
            return schema  # a bound refuses NaN and the infinities
        return {"anyOf": [schema, {"type": "string", "enum": list(FLOAT_SPECIALS)}]}

    @staticmethod
    def _string(
        rules: validate_pb2.FieldRules | None, field_rules: validate_pb2.FieldRules | None
    ) -> dict[str, Any]:
        # The gateway refuses NUL in any string (PostgreSQL text cannot hold it).
        schema: dict[str, Any] = {"type": "string", "pattern": _NO_NUL}
        if rules is None:
            return schema
        s = rules.string
        if s.HasField("min_len"):
            schema["minLength"] = s.min_len
        if s.HasField("max_len"):
            schema["maxLength"] = s.max_len
        if s.HasField("len"):
            schema["minLength"] = schema["maxLength"] = s.len
        if s.HasField("pattern"):
            schema["pattern"] = s.pattern
        if s.uuid:
            schema["format"] = "uuid"
        if s.email:
            schema["format"] = "email"
        allowed = list(getattr(s, "in"))
        if allowed:
            schema["enum"] = allowed
        ignore_zero = field_rules is not None and field_rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE
        if ignore_zero:
            # The rules apply only to a non-empty value.
            return {"anyOf": [{"type": "string", "const": ""}, schema]}
        return schema


def _query_parameters(route: Route, builder: SchemaBuilder) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []

    def add(prefix: str, f: FieldDesc, depth: int, must: frozenset[str] = frozenset()) -> None:
        name = prefix + f.name
        if f.type == FD.TYPE_MESSAGE and f.message_type.full_name not in _WKT:
            if f.is_repeated or f.message_type.GetOptions().map_entry or depth >= 2:
                return
            rules = _rules(f)
            # time_range.bounded: a required range needs both of its ends.
            bounded = rules is not None and any(r.id == "time_range.bounded" for r in rules.cel)
            for sub in f.message_type.fields:
                add(name + ".", sub, depth + 1, frozenset({"start", "end"}) if bounded else frozenset())
            return
        schema = builder.field_schema(f, text=True)
        # A nested field is checked only when its message is sent: required
        # only where a rule of the parent says so.
        required = f.name in must or (depth == 0 and f.name in zero_refused(f.containing_type))
        param: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
        _described(param, f.full_name)
        if f.is_repeated:
            param["style"] = "form"
            param["explode"] = True
        params.append(param)

    for f in route.query_fields():
        add("", f, 0)
    return params


# What each error status means here; which gRPC codes lead to it is
# gateway.problems.HTTP_STATUS (the one table), the rest the gateway answers itself.
_ERROR_STATUSES: dict[int, str] = {
    400: "Invalid input (INVALID_ARGUMENT, OUT_OF_RANGE): fieldViolations point at what to fix",
    401: "Missing or invalid credentials (UNAUTHENTICATED)",
    403: "Authenticated, but a scope or the tenant does not allow it (PERMISSION_DENIED)",
    404: "No such resource in the caller's tenant (NOT_FOUND)",
    409: "Conflicts with the current state (ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED)",
    413: "Request body over the size limit",
    415: "Request body is not application/json",
    422: "Idempotency-Key reused with a different request",
    429: "Rate limited or a quota exhausted (RESOURCE_EXHAUSTED); see Retry-After",
    500: "Internal error (INTERNAL, UNKNOWN, DATA_LOSS)",
    501: "Not built yet (UNIMPLEMENTED)",
    503: "A dependency is unavailable (UNAVAILABLE); see Retry-After",
    504: "The call did not finish within its deadline (DEADLINE_EXCEEDED)",
}


def error_statuses(route: Route) -> list[tuple[int, str]]:
    """Every error status this operation can answer with (problem+json): the
    HTTP statuses of every gRPC code a service may return, and those the
    gateway itself answers for this route (body checks, credentials, idempotency)."""
    statuses = {status for code, status in HTTP_STATUS.items() if 400 <= status < 600 and status != 499}
    if route.body:
        statuses |= {413, 415}
    if route.mutating and not route.policy.public:
        statuses.add(422)  # public routes refuse an Idempotency-Key outright (400)
    return sorted((s, _ERROR_STATUSES[s]) for s in statuses)


def _operation(route: Route, builder: SchemaBuilder) -> dict[str, Any]:
    req = route.request_class.DESCRIPTOR
    params: list[dict[str, Any]] = []
    for var in route.template.variables:
        f: MessageDesc = req
        field: FieldDesc | None = None
        for part in var.field_path.split("."):
            field = f.fields_by_name[part]
            f = field.message_type if field.type == FD.TYPE_MESSAGE else f
        assert field is not None
        param = {
            "name": var.field_path,
            "in": "path",
            "required": True,
            "schema": builder.single(field, _rules(field), text=True),
        }
        params.append(_described(param, field.full_name))
    params.extend(_query_parameters(route, builder))
    params.append(
        {
            "name": "X-Correlation-Id",
            "in": "header",
            "required": False,
            # Any value is taken: one that is not 1-128 of A-Z a-z 0-9 . _ : / + = -
            # is replaced by a generated id (tracing must never refuse a request).
            "description": "Echoed in the response and in every log line and event of the request;"
            " a value that is not 1-128 of `A-Z a-z 0-9 . _ : / + = -` is replaced by a generated id.",
            "schema": {"type": "string"},
        }
    )
    if route.streaming and resumable(route.request_class, route.response_class):
        params.append(
            {
                "name": LAST_EVENT_ID,
                "in": "header",
                "required": False,
                "description": "Resume after this event id (the `id:` of an event of this stream).",
                "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"},
            }
        )
    if route.mutating and not route.policy.public:  # public routes refuse a key (no caller to scope it to)
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Forwarded as `idempotency-key` metadata; retries with it act once.",
                "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:/+=-]{1,128}$"},
            }
        )
    problem = {PROBLEM_CONTENT_TYPE: {"schema": _ref("Problem")}}
    reply = route.response_class.DESCRIPTOR
    if route.response_body:
        ok_schema = builder.field_schema(reply.fields_by_name[route.response_body])
    else:
        ok_schema = builder.message_ref(reply)
    if route.streaming:
        ok = {
            "description": "Server-sent events: one `data:` event per message (proto3 JSON of "
            + reply.full_name
            + "), `: heartbeat` comments, `event: error` (problem+json) and `event: end`."
            + (
                " Events carry `id:` (the position in the tenant's stream); reconnecting with"
                " `Last-Event-ID` resumes right after it."
                if resumable(route.request_class, route.response_class)
                else " Live only: no event ids; each connection starts with a snapshot."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}, "x-item-schema": ok_schema}},
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": ok_schema}}}
    responses: dict[str, Any] = {"200": ok}
    if route.streaming:
        # OpenAPI has no WebSocket operations: the upgrade is this response,
        # and x-websocket says what flows (the same messages as the SSE events).
        responses["101"] = {
            "description": "WebSocket: the same GET with `Upgrade: websocket`. One text frame per "
            'message (the SSE `data:` JSON), `{"heartbeat":true}` frames when idle; on an error '
            "a problem+json frame, then close 1008 (400/401/403/404/501), 1013 (429/503) or "
            "1011; close 1000 when the service ends the stream. Frames from the client are ignored.",
            "x-websocket": {"message": ok_schema, "error": _ref("Problem")},
        }
    for status, description in error_statuses(route):
        responses[str(status)] = {"description": description, "content": problem}
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": f"{route.method.containing_service.name}.{route.method.name}",
        "tags": [route.method.containing_service.name],
        "parameters": params,
        "responses": responses,
        "security": []
        if route.policy.public
        else [{"bearerAuth": list(route.policy.scopes)}, {"apiKey": list(route.policy.scopes)}],
        "x-grpc-method": route.grpc_path,
    }
    _described(op, route.method.full_name)
    beyond = untranslated_rules(req) + list(_SERVER_RULES.get(route.method.full_name, ()))
    if "page_token" in req.fields_by_name:
        beyond.append(_PAGE_TOKEN_RULE)
    if beyond:
        # What the server checks that this schema cannot say: a request the
        # schema allows may still get 400 for one of these.
        op["x-constraints"] = beyond
    if route.body:
        if route.body == "*":
            body_schema = builder.body_ref(req, route.path_bound_fields())
        else:
            body_schema = builder.field_schema(req.fields_by_name[route.body])
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    return op


def _id_pointers(desc: MessageDesc, prefix: str = "", depth: int = 0) -> dict[str, str]:
    """Where a reply carries ids: field name -> JSON pointer of every string
    field ending in ``_id`` at the top or one message down (``/order/orderId``)."""
    found: dict[str, str] = {}
    for f in desc.fields:
        if f.is_repeated:
            continue
        pointer = f"{prefix}/{f.json_name}"
        # tenant_id is the caller's context, not a resource the reply names
        # (CreateTenant's new tenant is not the caller's to read).
        if f.type == FD.TYPE_STRING and f.name.endswith("_id") and f.name != "tenant_id":
            found.setdefault(f.name, pointer)
        elif f.type == FD.TYPE_MESSAGE and depth == 0 and f.message_type.full_name not in _WKT:
            for name, sub in _id_pointers(f.message_type, pointer, depth + 1).items():
                found.setdefault(name, sub)
    return found


def links(route: Route, routes: list[Route]) -> dict[str, Any]:
    """OpenAPI links from a mutating operation to the operations of the same
    service that its reply's ids address (PlaceOrder -> GetOrder, CancelOrder
    by `/order/orderId`): what a client (and schemathesis' stateful phase)
    follows. Derived from field names, so a new RPC gets its links too."""
    if not route.mutating:
        return {}
    reply = route.response_class.DESCRIPTOR
    if route.response_body:
        return {}
    ids = _id_pointers(reply)
    found: dict[str, Any] = {}
    for target in routes:
        variables = [v.field_path for v in target.template.variables]
        if target is route or target.target != route.target or target.streaming or not variables:
            continue
        if all(v in ids for v in variables):
            found[target.operation_id] = {
                "operationId": target.operation_id,
                "parameters": {v: f"$response.body#{ids[v]}" for v in variables},
            }
    return dict(sorted(found.items()))


def build_openapi(routes: list[Route], *, title: str, version: str) -> dict[str, Any]:
    """The whole document (computed once at start-up)."""
    builder = SchemaBuilder()
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: (openapi_path(r.template), r.http_method)):
        operation = _operation(route, builder)
        follow = links(route, routes)
        if follow:
            operation["responses"]["200"]["links"] = follow
        paths.setdefault(openapi_path(route.template), {})[route.http_method.lower()] = operation
    health = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
    for path, summary in (
        ("/healthz", "Liveness (no dependencies)"),
        ("/readyz", "Readiness (downstream services)"),
    ):
        paths[path] = {
            "get": {
                "operationId": path.strip("/"),
                "summary": summary,
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": health}}},
                    "503": {"description": "Not ready", "content": {"application/json": {"schema": health}}},
                },
            }
        }
    schemas = dict(sorted(builder.schemas.items()))
    schemas["Problem"] = PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "REST face of the platform's gRPC contracts (generated from proto/ at start-up).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }
