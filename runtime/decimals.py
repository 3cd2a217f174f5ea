"""Conversions between the contract's fixed-point Decimal and Python's decimal.

Prices, quantities and money never pass through binary floating point: the
wire form is the canonical decimal string, PostgreSQL stores numeric, and
Python code uses decimal.Decimal.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal

from trading.common.v1 import decimal_pb2

# The contract's Decimal carries at most 12 fractional digits.
_WIRE_QUANTUM = Decimal("1e-12")
_ROUNDING = Context(prec=100, rounding=ROUND_HALF_EVEN)


def to_proto(value: Decimal | int | str) -> decimal_pb2.Decimal:
    """The contract form of a number: canonical string, no exponent, no
    trailing zeros, at most 12 fractional digits (a computed value such as a
    notional, quantity x price, is rounded half-even to them: more would not
    be a contract decimal)."""
    number = Decimal(value)
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -12:
        number = number.quantize(_WIRE_QUANTUM, context=_ROUNDING)
    text = format(number.normalize(context=_ROUNDING), "f") if number != 0 else "0"
    return decimal_pb2.Decimal(value=text)


def from_proto(value: decimal_pb2.Decimal) -> Decimal:
    """A Decimal from its contract form; the empty (unset) message is zero."""
    return Decimal(value.value) if value.value else Decimal(0)
