"""Quantities, prices and money as the services compute them: exact decimals.

Sums and products of contract-sized numbers (at most 30 significant digits)
fit in 100 digits; :data:`EXACT` traps any rounding, so a silent loss of
precision is an error. The few values that are quotients (an average price)
are rounded on purpose, half-even, to :data:`WIRE_QUANTUM`: the 12 fractional
digits the contract's ``trading.common.v1.Decimal`` carries (:func:`wire`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from typing import Final

ZERO: Final = Decimal(0)
# What a contract decimal can carry after the point.
WIRE_QUANTUM: Final = Decimal("1e-12")
EXACT: Final = Context(prec=100, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
# For quotients, rounded half-even on purpose.
ROUNDING: Final = Context(
    prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)


def wire(value: Decimal) -> Decimal:
    """`value` rounded (half-even) to the contract's 12 fractional digits."""
    return value.quantize(WIRE_QUANTUM, rounding=ROUND_HALF_EVEN, context=ROUNDING)


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """The exact sum (the builtin sum would round in the thread's default context)."""
    total = ZERO
    for value in values:
        total = EXACT.add(total, value)
    return total
