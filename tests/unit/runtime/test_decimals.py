"""The contract's Decimal from Python: canonical text, never more than 12
fractional digits, nothing lost to the default 28-digit context."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.decimals import from_proto, to_proto

# trading.common.v1.Decimal.value's protovalidate pattern.
CONTRACT = re.compile(r"^-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,12})?$")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("646.810") * Decimal("2150.048020430140"), "1390672.560094418853"),  # a notional
        (Decimal("123456789012345678.123456789012"), "123456789012345678.123456789012"),  # 30 digits kept
        (Decimal("0.00"), "0"),
        (Decimal("1E+3"), "1000"),
        (Decimal("-0.0000000000005"), "0"),
        (Decimal("0.0000000000015"), "0.000000000002"),  # half-even
    ],
)
def test_contract_text(value: Decimal, text: str) -> None:
    assert to_proto(value).value == text


@given(
    st.decimals(min_value=Decimal("-1e11"), max_value=Decimal("1e11"), places=6),
    st.decimals(min_value=Decimal("0"), max_value=Decimal("1e6"), places=9),
)
def test_products_are_contract_decimals(quantity: Decimal, price: Decimal) -> None:
    text = to_proto(quantity * price).value
    assert CONTRACT.fullmatch(text), text
    assert abs(from_proto(to_proto(quantity * price)) - quantity * price) <= Decimal("0.5e-12")
