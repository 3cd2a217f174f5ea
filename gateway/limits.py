"""The input guard of the REST edge: cheap checks on raw bytes before any parser
runs, so hostile input gets a 400 problem instead of reaching a parser's (or
PostgreSQL's) failure modes.

* Bodies: at most ``max_json_depth`` nested arrays/objects (json.loads
  recurses: deep nesting raises RecursionError), digit runs of at most
  ``max_number_chars`` (int() of a long literal is quadratic, and Python
  refuses more than 4,300 digits with a ValueError), no NUL (raw or as a
  ``\\u0000`` escape: PostgreSQL text cannot hold it), no lone UTF-16
  surrogate escapes (not encodable as UTF-8, protobuf refuses them), and
  valid UTF-8.
* Query strings and paths: bounded length and parameter count, percent-decoded
  strictly as UTF-8 (no silent U+FFFD), no NUL and no other C0 control
  characters in parameter values.

Each check scans the bytes with compiled regexes (C speed); only the bracket
walk is a Python loop, and it stops as soon as the depth limit is crossed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from gateway.config import GatewayOptions
from gateway.problems import Problem, bad_request, violation
from gateway.transcode import parse_body

# Escaped backslashes and escaped quotes removed first (plain byte replaces,
# C speed), string literals are simply '"[^"]*"', and every backslash left is
# the start of a real escape sequence.
_STRING = re.compile(rb'"[^"]*"')
_NUL_ESCAPE = re.compile(rb"\\u0000")
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_BRACKETS_ONLY = bytes(range(256)).translate(None, b"[]{}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_json_depth: int
    max_number_chars: int
    max_query_bytes: int
    max_query_params: int
    max_path_bytes: int

    @classmethod
    def of(cls, options: GatewayOptions) -> InputLimits:
        return cls(
            max_json_depth=options.max_json_depth,
            max_number_chars=options.max_number_chars,
            max_query_bytes=options.max_query_bytes,
            max_query_params=options.max_query_params,
            max_path_bytes=options.max_path_bytes,
        )


def _refuse(detail: str, reason: str, field_path: str = "", location: str = "body") -> Problem:
    v = violation(field_path, detail, reason, pointer="" if not field_path else "/" + field_path)
    v["location"] = location
    return bad_request(detail, [v])


def check_body(raw: bytes, limits: InputLimits) -> None:
    """400 problem when a JSON body breaks a limit (see the module docstring)."""
    if b"\x00" in raw:
        raise _refuse("request body contains a NUL byte", "nul_byte")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(f"request body is not valid UTF-8 (byte {exc.start})", "encoding") from None
    unescaped = raw
    if b"\\" in raw:
        unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
        if _NUL_ESCAPE.search(unescaped):
            raise _refuse("strings may not contain NUL (\\u0000)", "nul_byte")
        if _SURROGATE.search(_SURROGATE_PAIR.sub(b"", unescaped)):
            raise _refuse("strings may not contain lone UTF-16 surrogates", "encoding")
    structure = _STRING.sub(b'""', unescaped)
    if re.search(rb"[0-9]{%d}" % (limits.max_number_chars + 1), structure):
        raise _refuse(f"number literal longer than {limits.max_number_chars} digits", "number_too_long")
    brackets = structure.translate(None, _BRACKETS_ONLY)
    if brackets.count(b"[") + brackets.count(b"{") > limits.max_json_depth:
        depth = 0
        for byte in brackets:
            depth += 1 if byte in (0x5B, 0x7B) else -1
            if depth > limits.max_json_depth:
                raise _refuse(f"JSON nested deeper than {limits.max_json_depth} levels", "too_deep")


def parse_json_body(raw: bytes, limits: InputLimits) -> Any:
    """The checked body as a JSON document (empty body: ``{}``); 400 on anything else."""
    check_body(raw, limits)
    try:
        return parse_body(raw)
    except Problem:
        raise
    except (ValueError, RecursionError) as exc:
        # Belt and braces: what the pre-check should already have refused.
        raise _refuse(f"request body cannot be parsed: {type(exc).__name__}", "json_syntax") from None


def decode_component(raw: str, what: str, location: str) -> str:
    """A percent-encoded path or query component, strictly UTF-8, no control characters."""
    data = unquote_to_bytes(raw.replace("+", " ") if location == "query" else raw)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(f"{location} {what!r} is not valid UTF-8", "encoding", location=location) from None
    if _CONTROL.search(text):
        raise _refuse(
            f"{location} {what!r} contains a control character (e.g. NUL)",
            "control_character",
            location=location,
        )
    return text


def parse_query(raw_query: bytes | str, limits: InputLimits) -> list[tuple[str, str]]:
    """``parse_qsl`` with limits: total length, parameter count, strict decoding."""
    query = raw_query.decode("latin-1") if isinstance(raw_query, bytes) else raw_query
    if len(query) > limits.max_query_bytes:
        raise _refuse(
            f"query string longer than {limits.max_query_bytes} bytes", "too_long", location="query"
        )
    pairs = [p for p in query.split("&") if p]
    if len(pairs) > limits.max_query_params:
        raise _refuse(f"more than {limits.max_query_params} query parameters", "too_many", location="query")
    out: list[tuple[str, str]] = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        key = decode_component(name, name[:40], "query")
        out.append((key, decode_component(value, key[:40], "query")))
    return out


def check_path(raw_path: str, limits: InputLimits) -> None:
    """400 for an over-long path or one whose segments do not decode to clean UTF-8."""
    if len(raw_path) > limits.max_path_bytes:
        raise _refuse(f"path longer than {limits.max_path_bytes} bytes", "too_long", location="path")
    if "%" in raw_path:
        decode_component(raw_path, "path", "path")
