"""Order vocabulary the services share (execution places orders, risk checks them)."""

from __future__ import annotations

import enum


class OrderType(enum.IntEnum):
    """trading.common.v1.OrderType (same numbers; UNSPECIFIED is never a type)."""

    MARKET = 1
    LIMIT = 2
