"""Decimal arithmetic of execution's domain.

Sums and products of contract-sized numbers (at most 30 significant digits)
fit in 100 digits; :data:`EXACT` traps any rounding, so a silent loss of
precision in a sum of fills is an error. :data:`ROUNDING` is for the few
values that are rounded on purpose (the average price, to
:data:`WIRE_QUANTUM`: the contract's Decimal carries at most 12 fractional
digits).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from typing import Final

# The contract's Decimal allows at most 12 fractional digits.
WIRE_QUANTUM: Final = Decimal("1e-12")

EXACT: Final = Context(prec=100, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
ROUNDING: Final = Context(prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
