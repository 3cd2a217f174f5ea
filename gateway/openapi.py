"""OpenAPI 3.1 document generated from the route table and the descriptors.

Schemas come from the messages (proto3 JSON names and types: int64 as
strings, enums by name, Timestamps as date-time strings) with protovalidate
rules turned into JSON Schema constraints where the mapping is direct
(string length/pattern/uuid/email, numeric bounds, repeated item counts,
enum values allowed). CEL rules are not translated (the service still
enforces them and answers 400 with field violations).
"""

from __future__ import annotations

from typing import Any

from buf.validate import validate_pb2

from gateway.problems import PROBLEM_CONTENT_TYPE, PROBLEM_SCHEMA
from gateway.routes import Route
from gateway.templates import openapi_path
from gateway.transcode import FD, FieldDesc, MessageDesc

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


def _rules(f: FieldDesc) -> validate_pb2.FieldRules | None:
    options = f.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return None
    rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.field]
    return rules


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


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

    def _message(self, desc: MessageDesc) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for f in desc.fields:
            properties[f.json_name] = self.field_schema(f)
            rules = _rules(f)
            if rules is not None and rules.required:
                required.append(f.json_name)
        schema: dict[str, Any] = {"type": "object", "title": desc.name, "properties": properties}
        if required:
            schema["required"] = required
        return schema

    def field_schema(self, f: FieldDesc) -> dict[str, Any]:
        rules = _rules(f)
        if f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value, None)}
        if f.is_repeated:
            schema: dict[str, Any] = {"type": "array"}
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
            schema["items"] = self.single(f, items_rules)
            return schema
        return self.single(f, rules)

    def single(self, f: FieldDesc, rules: validate_pb2.FieldRules | None) -> dict[str, Any]:
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
        if t in _INT32:
            schema: dict[str, Any] = {"type": "integer", "format": "int32"}
        elif t in _INT64:
            # proto3 JSON writes 64-bit integers as strings; numbers are accepted on input.
            schema = {"type": ["string", "integer"], "format": "int64"}
        else:
            schema = {"type": "number"}
        if rules is not None and kind is not None and kind == _RULES_BY_TYPE.get(t) and t not in _INT64:
            numeric = getattr(rules, kind)
            for proto_name, json_name in (
                ("gte", "minimum"),
                ("gt", "exclusiveMinimum"),
                ("lte", "maximum"),
                ("lt", "exclusiveMaximum"),
            ):
                if numeric.HasField(proto_name):
                    schema[json_name] = getattr(numeric, proto_name)
        return schema

    @staticmethod
    def _string(
        rules: validate_pb2.FieldRules | None, field_rules: validate_pb2.FieldRules | None
    ) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
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

    def add(prefix: str, f: FieldDesc, depth: int) -> None:
        name = prefix + f.name
        if f.type == FD.TYPE_MESSAGE and f.message_type.full_name not in _WKT:
            if f.is_repeated or f.message_type.GetOptions().map_entry or depth >= 2:
                return
            for sub in f.message_type.fields:
                add(name + ".", sub, depth + 1)
            return
        schema = builder.field_schema(f)
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if f.is_repeated:
            param["style"] = "form"
            param["explode"] = True
        params.append(param)

    for f in route.query_fields():
        add("", f, 0)
    return params


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
        params.append(
            {
                "name": var.field_path,
                "in": "path",
                "required": True,
                "schema": builder.single(field, _rules(field)),
            }
        )
    params.extend(_query_parameters(route, builder))
    params.append(
        {
            "name": "X-Correlation-Id",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:/+=-]{1,128}$"},
        }
    )
    if route.mutating:
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
            + "), `: heartbeat` comments, `event: error` (problem+json) and `event: end`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "x-item-schema": ok_schema}},
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": ok_schema}}}
    responses: dict[str, Any] = {"200": ok, "400": {"description": "Bad request", "content": problem}}
    if not route.policy.public:
        responses["401"] = {"description": "Missing or invalid credentials", "content": problem}
        responses["403"] = {"description": "Missing scope", "content": problem}
    responses["429"] = {"description": "Rate limited", "content": problem}
    responses["default"] = {"description": "Error (RFC 9457 problem details)", "content": problem}
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
    if route.body:
        if route.body == "*":
            body_schema = builder.message_ref(req)
        else:
            body_schema = builder.field_schema(req.fields_by_name[route.body])
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    return op


def build_openapi(routes: list[Route], *, title: str, version: str) -> dict[str, Any]:
    """The whole document (computed once at start-up)."""
    builder = SchemaBuilder()
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: (openapi_path(r.template), r.http_method)):
        paths.setdefault(openapi_path(route.template), {})[route.http_method.lower()] = _operation(
            route, builder
        )
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
