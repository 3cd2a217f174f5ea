"""Reading protovalidate results in tests."""

from __future__ import annotations

import protovalidate
from google.protobuf.message import Message
from trading.common.v1 import decimal_pb2

from runtime.errors import field_path


def violations(msg: Message) -> set[tuple[str, str]]:
    """(field path, rule id) of every violation; "" as path for message-level rules."""
    return {
        (field_path(v.proto) if v.proto.field is not None else "", v.proto.rule_id)
        for v in protovalidate.collect_violations(msg)
    }


def dec(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)
