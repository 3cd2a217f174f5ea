"""The input guard (gateway.limits) and the client source behind proxies (pure)."""

from __future__ import annotations

import json

import pytest

from gateway.config import GatewayOptions
from gateway.limits import InputLimits, check_body, parse_json_body, parse_query
from gateway.problems import Problem
from gateway.ratelimit import client_source, trusted_networks

LIMITS = InputLimits.of(GatewayOptions())


def _reason(raw: bytes) -> str:
    with pytest.raises(Problem) as caught:
        check_body(raw, LIMITS)
    assert caught.value.http_status == 400
    return caught.value.field_violations[0]["reason"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 33 + b"]" * 33, "too_deep"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "too_deep"),
        (b"[" * 100_000, "too_deep"),
        (b'{"n":' + b"9" * 4301 + b"}", "number_too_long"),
        (b'{"n":1e' + b"9" * 40 + b"}", "number_too_long"),
        (b'{"s":"a\\u0000b"}', "nul_byte"),
        (b'{"s":"a\\\\\\u0000b"}', "nul_byte"),  # an escaped backslash, then a real \u0000
        (b'{"s":"a\x00b"}', "nul_byte"),
        (b'{"s":"\xff"}', "encoding"),
        (b'{"s":"\\ud800"}', "encoding"),
        (b'{"s":"\\udc00\\ud800"}', "encoding"),
    ],
)
def test_hostile_bodies_are_refused(raw: bytes, reason: str) -> None:
    assert _reason(raw) == reason


@pytest.mark.parametrize(
    "doc",
    [
        {"s": "a\\u0000b"},  # the text \u0000, not a NUL
        {"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "n": 12345678901234567890},
        {"s": "9" * 5000},  # long digit strings are data (decimals), not literals
        {"emoji": "\U0001f600", "nested": [[[[1]]]]},
    ],
)
def test_ordinary_bodies_pass(doc: object) -> None:
    raw = json.dumps(doc).encode()
    assert parse_json_body(raw, LIMITS) == doc


def test_query_is_decoded_strictly_and_bounded() -> None:
    assert parse_query(b"a=1&b=%C3%A9&c&d=x+y", LIMITS) == [("a", "1"), ("b", "é"), ("c", ""), ("d", "x y")]
    for bad in (b"a=%00", b"a=%FF", b"%FF=1", b"a=%0A", "&".join(["x=1"] * 65).encode(), b"a=" + b"x" * 9000):
        with pytest.raises(Problem):
            parse_query(bad, LIMITS)


def test_client_source_believes_only_trusted_proxies() -> None:
    trusted = trusted_networks(["10.0.0.0/8"])
    assert client_source("203.0.113.5", "1.2.3.4", trusted) == "203.0.113.5"  # peer is no proxy
    assert client_source("10.0.0.2", "198.51.100.7", trusted) == "198.51.100.7"
    # The client wrote its own X-Forwarded-For entry first: the proxy's append wins.
    assert client_source("10.0.0.2", "1.2.3.4, 198.51.100.7, 10.0.0.9", trusted) == "198.51.100.7"
    assert client_source("10.0.0.2", "garbage", trusted) == "10.0.0.2"
    assert client_source("10.0.0.2", "1.2.3.4", []) == "10.0.0.2"
