"""Conversions between the contract's fixed-point Decimal and Python's decimal.

Prices, quantities and money never pass through binary floating point: the
wire form is the canonical decimal string, PostgreSQL stores numeric, and
Python code uses decimal.Decimal.
"""

from __future__ import annotations

from decimal import Decimal

from trading.common.v1 import decimal_pb2


def to_proto(value: Decimal | int | str) -> decimal_pb2.Decimal:
    """The contract form of a number: canonical string, no exponent, no trailing zeros."""
    number = Decimal(value)
    text = format(number.normalize(), "f") if number != 0 else "0"
    return decimal_pb2.Decimal(value=text)


def from_proto(value: decimal_pb2.Decimal) -> Decimal:
    """A Decimal from its contract form; the empty (unset) message is zero."""
    return Decimal(value.value) if value.value else Decimal(0)
