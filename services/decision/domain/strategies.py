"""A strategy's rules: from a signal to an order intent, or why none, and the
deterministic client order id of an intent (pure logic, no I/O)."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from domain.positions import Side as Side  # the shared vocabulary, re-exported
from services.decision.domain.ensemble import Direction

CLIENT_ORDER_ID_PREFIX: Final = "dc-"


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """What the hot path needs of a stored strategy."""

    tenant_id: str
    strategy_id: str
    symbols: frozenset[str]
    enabled: bool
    max_position: Decimal
    fixed_quantity: Decimal
    model_ids: tuple[str, ...]
    signal_threshold: float
    cooldown: timedelta
    version: int


class NoIntent(enum.StrEnum):
    """Why a signal created no order intent."""

    HOLD = "hold"
    DISABLED = "disabled"
    SYMBOL_NOT_TRADED = "symbol_not_traded"
    COOLDOWN = "cooldown"
    POSITION_LIMIT = "position_limit"


@dataclass(frozen=True, slots=True)
class Intent:
    """An order the strategy wants: a market order of `quantity` on `side`."""

    side: Side
    quantity: Decimal


def decide_intent(
    strategy: StrategyConfig,
    symbol: str,
    direction: Direction,
    position: Decimal,
    last_intent_at: datetime | None,
    now: datetime,
) -> Intent | NoIntent:
    """The order intent a signal leads to under the strategy's rules, or why none.

    `position` is the strategy's signed position in `symbol`; an intent that
    would take its absolute value above ``max_position`` is not created (an
    order that reduces the position always is)."""
    if not strategy.enabled:
        return NoIntent.DISABLED
    if symbol not in strategy.symbols:
        return NoIntent.SYMBOL_NOT_TRADED
    if direction is Direction.HOLD:
        return NoIntent.HOLD
    if last_intent_at is not None and strategy.cooldown and now - last_intent_at < strategy.cooldown:
        return NoIntent.COOLDOWN
    side = Side.BUY if direction is Direction.BUY else Side.SELL
    quantity = strategy.fixed_quantity
    after = position + quantity if side is Side.BUY else position - quantity
    if abs(after) > strategy.max_position and abs(after) >= abs(position):
        return NoIntent.POSITION_LIMIT
    return Intent(side, quantity)


def client_order_id(
    tenant_id: str,
    strategy_id: str,
    symbol: str,
    feature_set_version: str,
    tick_sequence: int,
    as_of_ns: int,
) -> str:
    """The client order id of the intent a strategy derives from one feature
    vector: the same vector (redelivered, replayed, seen by another replica)
    always gives the same id, so execution places it at most once. The vector
    is named by its symbol, feature set, tick sequence and exchange time (the
    time keeps ids apart when a restarted feed starts its sequence again)."""
    key = "\x1f".join(
        (tenant_id, strategy_id, symbol, feature_set_version, str(tick_sequence), str(as_of_ns))
    )
    return CLIENT_ORDER_ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]
