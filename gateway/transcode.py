"""proto3 JSON <-> protobuf for the REST routes, with precise 400s.

json_format does the mapping (int64 as strings, enums by name, Timestamps,
Durations, wrappers); in front of it :func:`check_json` walks the document
against the message descriptor so malformed input is reported with an RFC 6901
pointer to the offending member (unknown field, wrong JSON type, unknown enum
name) instead of json_format's prose. Path variables and query parameters
(strings) are converted per field type and set by field path.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from google.protobuf import descriptor, json_format, message

from gateway.problems import Problem, bad_request, violation

FD = descriptor.FieldDescriptor
# protobuf's stubs type descriptors as a union of the upb and pure-Python
# classes, with message_type/enum_type Optional; these helpers only follow
# them where the field type guarantees them, so descriptors are typed loosely.
FieldDesc: TypeAlias = Any
MessageDesc: TypeAlias = Any

INT_RANGES: dict[int, tuple[int, int]] = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = {FD.TYPE_FLOAT, FD.TYPE_DOUBLE}
# An integer as text, in canonical decimal form: ASCII digits without
# leading zeros (int() would also take "007", "1_000", " 12 " and non-ASCII
# digits), at most 20 of them (a uint64). The OpenAPI document states exactly
# this form (gateway.openapi), so what it allows is what is taken.
_INTEGER_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,19})")
# A JSON number as text (RFC 8259 grammar).
_NUMBER_TEXT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
# The non-finite numbers proto3 JSON writes as strings.
FLOAT_SPECIALS = ("NaN", "Infinity", "-Infinity")


def _parse_integer(text: str) -> int:
    if not _INTEGER_TEXT.fullmatch(text):
        raise ValueError("expected an integer (up to 20 ASCII digits)")
    return int(text)


# Well-known types whose JSON form is a string.
_STRING_WKT = {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
# Well-known types whose JSON form is arbitrary: left to json_format.
_FREE_WKT = {
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
}


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def fields_by_json_key(desc: MessageDesc) -> dict[str, FieldDesc]:
    """A message's fields by both accepted JSON keys (lowerCamelCase and proto name)."""
    out: dict[str, FieldDesc] = {}
    for f in desc.fields:
        out[f.name] = f
        out[f.json_name] = f
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _nullable(f: FieldDesc) -> bool:
    """Fields where JSON null means something: google.protobuf.Value, NullValue and the wrappers."""
    if f.type == FD.TYPE_ENUM:
        return bool(f.enum_type.full_name == "google.protobuf.NullValue")
    if f.type != FD.TYPE_MESSAGE:
        return False
    name: str = f.message_type.full_name
    return name.startswith("google.protobuf.") and name.endswith("Value")


def check_json(value: Any, desc: MessageDesc, pointer: str = "") -> list[dict[str, str]]:
    """Violations of a JSON object against a message type (empty when json_format can parse it)."""
    if desc.full_name in _FREE_WKT:
        return []
    if desc.full_name in _STRING_WKT or (
        desc.full_name.startswith("google.protobuf.") and desc.full_name.endswith("Value")
    ):
        return []  # json_format's own checks; reported at this pointer on failure
    if not isinstance(value, dict):
        return [_v(pointer, f"expected an object, got {_type_name(value)}", "type")]
    out: list[dict[str, str]] = []
    by_key = fields_by_json_key(desc)
    seen: dict[str, str] = {}
    oneofs: dict[str, str] = {}
    for key, item in value.items():
        ptr = f"{pointer}/{_escape(str(key))}"
        f = by_key.get(key)
        if f is None:
            out.append(_v(ptr, f"unknown field {key!r} in {desc.name}", "unknown_field"))
            continue
        if f.name in seen:
            out.append(_v(ptr, f"field given twice (as {seen[f.name]!r} and {key!r})", "duplicate"))
            continue
        seen[f.name] = key
        if item is None:
            # proto3 JSON reads null as "unset"; the REST document does not
            # allow it (omit the member), except where null is a value.
            if not _nullable(f):
                out.append(_v(ptr, "null is not a value here; leave the member out", "type"))
            continue
        oneof = f.containing_oneof
        if oneof is not None and not oneof.name.startswith("_"):
            if oneof.name in oneofs:
                out.append(_v(ptr, f"only one of the '{oneof.name}' fields may be set", "oneof"))
                continue
            oneofs[oneof.name] = key
        out.extend(_check_field(item, f, ptr))
    return out


def _is_map(f: FieldDesc) -> bool:
    return bool(f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry)


def _check_field(value: Any, f: FieldDesc, pointer: str) -> list[dict[str, str]]:
    if _is_map(f):
        if not isinstance(value, dict):
            return [_v(pointer, f"expected an object, got {_type_name(value)}", "type")]
        value_field = f.message_type.fields_by_name["value"]
        out: list[dict[str, str]] = []
        for k, item in value.items():
            out.extend(_check_single(item, value_field, f"{pointer}/{_escape(str(k))}"))
        return out
    if f.is_repeated:
        if not isinstance(value, list):
            return [_v(pointer, f"expected an array, got {_type_name(value)}", "type")]
        out = []
        for i, item in enumerate(value):
            out.extend(_check_single(item, f, f"{pointer}/{i}"))
        return out
    return _check_single(value, f, pointer)


def _check_single(value: Any, f: FieldDesc, pointer: str) -> list[dict[str, str]]:
    t = f.type
    if t == FD.TYPE_MESSAGE:
        return check_json(value, f.message_type, pointer)
    if value is None:
        return []
    if t == FD.TYPE_STRING:
        return (
            []
            if isinstance(value, str)
            else [_v(pointer, f"expected a string, got {_type_name(value)}", "type")]
        )
    if t == FD.TYPE_BYTES:
        if not isinstance(value, str):
            return [_v(pointer, "expected a base64 string", "type")]
        return [] if _b64(value) is not None else [_v(pointer, "not valid base64", "format")]
    if t == FD.TYPE_BOOL:
        return (
            []
            if isinstance(value, bool)
            else [_v(pointer, f"expected a boolean, got {_type_name(value)}", "type")]
        )
    if t == FD.TYPE_ENUM:
        if f.enum_type.full_name == "google.protobuf.NullValue":
            return []
        if isinstance(value, str):
            if value in f.enum_type.values_by_name:
                return []
            names = ", ".join(v.name for v in f.enum_type.values)
            return [_v(pointer, f"unknown value {value!r}; expected one of {names}", "enum")]
        # Names only: proto3 JSON parsers also take numbers, but the REST
        # edge takes what its document states (the names it also writes).
        return [_v(pointer, f"expected an enum name, got {_type_name(value)}", "type")]
    if t in INT_RANGES:
        return _check_int(value, t, pointer)
    if t in _FLOATS:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return []
        if isinstance(value, str):
            # Strings only for what JSON numbers cannot say (float() would take " 1e3 " and "nan").
            if value in FLOAT_SPECIALS:
                return []
            return [_v(pointer, f"expected a number (or one of {', '.join(FLOAT_SPECIALS)})", "type")]
        return [_v(pointer, f"expected a number, got {_type_name(value)}", "type")]
    return []


def _check_int(value: Any, t: int, pointer: str) -> list[dict[str, str]]:
    number: int
    if isinstance(value, bool):
        return [_v(pointer, "expected an integer, got boolean", "type")]
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            return [_v(pointer, "expected an integer", "type")]
        number = int(value)
    elif isinstance(value, str):
        try:
            number = _parse_integer(value)
        except ValueError:
            return [_v(pointer, "expected an integer (a JSON number or a decimal string)", "type")]
    else:
        return [_v(pointer, f"expected an integer, got {_type_name(value)}", "type")]
    low, high = INT_RANGES[t]
    if not low <= number <= high:
        return [_v(pointer, f"out of range [{low}, {high}]", "range")]
    return []


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(
            text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None
        )
    except (binascii.Error, ValueError):
        return None


def _v(pointer: str, description: str, reason: str) -> dict[str, str]:
    field_path = pointer.lstrip("/").replace("/", ".").replace("~1", "/").replace("~0", "~")
    return violation(field_path, description, reason, pointer=pointer)


# ---- documents -> messages -------------------------------------------------------------------


def parse_body(raw: bytes) -> Any:
    """The JSON document of a request body; 400 with the position when malformed."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise bad_request(
            "request body is not UTF-8", [violation("", str(exc), "encoding", pointer="")]
        ) from exc
    except json.JSONDecodeError as exc:
        detail = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise bad_request(detail, [violation("", detail, "json_syntax", pointer="")]) from exc


def merge_json(doc: Any, msg: message.Message, pointer: str = "") -> None:
    """Check then parse ``doc`` into ``msg`` (400 problem on any violation)."""
    problems = check_json(doc, msg.DESCRIPTOR, pointer)
    if problems:
        raise bad_request(
            "invalid request body: " + ", ".join(p["pointer"] or "/" for p in problems), problems
        )
    try:
        json_format.ParseDict(doc, msg)
    except json_format.ParseError as exc:
        # What the walker does not model (e.g. a malformed Timestamp string).
        raise bad_request(
            "invalid request body", [violation("", str(exc).split("\n", 1)[0], "parse", pointer=pointer)]
        ) from exc


def resolve_path(desc: MessageDesc, dotted: str) -> list[FieldDesc] | None:
    """Fields along a dotted path (proto or JSON names per segment), or None."""
    fields: list[FieldDesc] = []
    current: MessageDesc | None = desc
    for part in dotted.split("."):
        if current is None:
            return None
        f = fields_by_json_key(current).get(part)
        if f is None:
            return None
        fields.append(f)
        current = f.message_type if f.type == FD.TYPE_MESSAGE and not _is_map(f) else None
    return fields


def scalar_from_text(f: FieldDesc, text: str) -> Any:
    """A path/query string as a value of ``f`` (ValueError with a message when it is not one)."""
    t = f.type
    if t == FD.TYPE_STRING:
        return text
    if t == FD.TYPE_BOOL:
        if text == "true":
            return True
        if text == "false":
            return False
        raise ValueError("expected true or false")
    if t in INT_RANGES:
        number = _parse_integer(text)
        low, high = INT_RANGES[t]
        if not low <= number <= high:
            raise ValueError(f"out of range [{low}, {high}]")
        return number
    if t in _FLOATS:
        # A JSON number's text, or a special (float() would take " 1e3 " and "nan").
        if text in FLOAT_SPECIALS:
            return float(text)
        if not _NUMBER_TEXT.fullmatch(text):
            raise ValueError("expected a number")
        return float(text)
    if t == FD.TYPE_ENUM:
        found = f.enum_type.values_by_name.get(text)
        if found is not None:
            return found.number
        names = ", ".join(v.name for v in f.enum_type.values)
        raise ValueError(f"unknown value {text!r}; expected one of {names}")
    if t == FD.TYPE_BYTES:
        data = _b64(text)
        if data is None:
            raise ValueError("not valid base64")
        return data
    raise ValueError("this field cannot be given as text")


def set_from_text(msg: message.Message, dotted: str, values: Sequence[str], location: str) -> None:
    """Set a (possibly nested, possibly repeated) field from path/query text."""
    path = resolve_path(msg.DESCRIPTOR, dotted)
    field_path = ".".join(f.name for f in path) if path else dotted
    ptr = "/" + field_path.replace(".", "/")

    def fail(description: str, reason: str) -> Problem:
        v = violation(field_path, description, reason, pointer=ptr)
        v["location"] = location
        return bad_request(f"invalid {location} parameter {dotted!r}: {description}", [v])

    if path is None:
        raise fail(f"no field {dotted!r} in {msg.DESCRIPTOR.name}", "unknown_field")
    target = msg
    for f in path[:-1]:
        if f.is_repeated:
            raise fail("repeated messages cannot be set from a parameter", "unsupported")
        target = getattr(target, f.name)
    leaf = path[-1]
    if _is_map(leaf):
        raise fail("map fields cannot be set from a parameter", "unsupported")
    if not leaf.is_repeated and len(values) > 1:
        raise fail("given more than once", "repeated_parameter")
    try:
        if leaf.type == FD.TYPE_MESSAGE:
            # Well-known types with a string JSON form (Timestamp, Duration, wrappers).
            for text in values:
                sub = getattr(target, leaf.name).add() if leaf.is_repeated else getattr(target, leaf.name)
                doc: Any = text
                if leaf.message_type.full_name.endswith("Value") and leaf.message_type.full_name.startswith(
                    "google.protobuf."
                ):
                    inner = leaf.message_type.fields_by_name.get("value")
                    doc = scalar_from_text(inner, text) if inner is not None else text
                    if isinstance(doc, bytes):
                        doc = text
                elif leaf.message_type.full_name not in _STRING_WKT:
                    raise ValueError(f"a message: set its fields, e.g. {dotted}.<field>")
                try:
                    json_format.ParseDict(doc, sub)
                except json_format.ParseError as exc:
                    raise ValueError(str(exc).split("\n", 1)[0]) from None
            return
        converted = [scalar_from_text(leaf, text) for text in values]
    except ValueError as exc:
        raise fail(str(exc), "type") from None
    if leaf.is_repeated:
        getattr(target, leaf.name).extend(converted)
    else:
        setattr(target, leaf.name, converted[0])


def to_json(msg: message.Message) -> dict[str, Any]:
    """proto3 JSON of a response: lowerCamelCase names, every field present."""
    doc: dict[str, Any] = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    return doc


def dumps(doc: Mapping[str, Any] | Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
