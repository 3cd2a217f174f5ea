"""Pure decision logic: features to model inputs, the ensemble combination,
signal to order intent rules, and deterministic client order ids. No I/O.

Conventions, stated once:

- A model's score is ``2 * P(up) - 1``: -1 is a sure fall, 1 a sure rise.
- The ensemble strength is the weighted mean of the scores of the models that
  answered (outcome OK); models that failed, timed out or were skipped are
  left out and the signal is flagged ``fallback``. With no model left the
  signal is flat (HOLD, strength 0).
- Confidence is the models' agreement on the direction: ``|sum(w * sign(s))| /
  sum(w)`` over the answering models (1: unanimous, 0: evenly split).
- Direction: BUY when ``strength >= threshold``, SELL when ``<= -threshold``,
  HOLD otherwise.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from domain.positions import Side as Side  # the shared vocabulary, re-exported

# Dimensionless FeatureVector fields the models read, in input order. Price
# levels (mid, EMAs, VWAP) are left out: they do not carry over between
# instruments or price regimes.
FEATURE_NAMES: Final[tuple[str, ...]] = (
    "log_return",
    "window_return",
    "rsi",
    "volatility",
    "order_book_imbalance",
    "spread_bps",
    "ema_crossover",
)

CLIENT_ORDER_ID_PREFIX: Final = "dc-"


def feature_row(vector: Any, names: Sequence[str] = FEATURE_NAMES) -> list[float]:
    """The model input of a feature vector (the contract's message or the
    features domain's NamedTuple: both have these attributes)."""
    row = [float(getattr(vector, name)) for name in names]
    if not all(math.isfinite(x) for x in row):
        raise ValueError("feature vector holds a NaN or infinite value")
    return row


class Outcome(enum.IntEnum):
    """trading.decision.v1.ModelOutcome (same numbers)."""

    OK = 1
    ERROR = 2
    TIMEOUT = 3
    SKIPPED = 4


class Direction(enum.IntEnum):
    """trading.decision.v1.SignalDirection (same numbers)."""

    BUY = 1
    SELL = 2
    HOLD = 3


@dataclass(frozen=True, slots=True)
class ModelResult:
    """One model's answer within an ensemble evaluation."""

    model_id: str
    version: str
    outcome: Outcome
    score: float = 0.0
    weight: float = 1.0
    latency_s: float = 0.0
    error: str = ""
    # The analog model's: ids of the past market states it voted with.
    analogs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Combined:
    """A strategy's ensemble verdict on one vector."""

    direction: Direction
    strength: float
    confidence: float
    fallback: bool
    fallback_reason: str
    results: tuple[ModelResult, ...]


def combine(results: Sequence[ModelResult], threshold: float) -> Combined:
    """Combine model results into a signal (see the module docstring)."""
    ok = [r for r in results if r.outcome is Outcome.OK and r.weight > 0]
    failed = [r for r in results if r.outcome is not Outcome.OK]
    reason = ""
    if failed:
        parts = [
            f"{r.model_id} {r.outcome.name.lower()}" + (f": {r.error}" if r.error else "") for r in failed
        ]
        reason = "; ".join(parts) + ("; no model left: flat" if not ok else "; used the remaining models")
    if not ok:
        return Combined(Direction.HOLD, 0.0, 0.0, bool(results), reason or "no models", tuple(results))
    total = math.fsum(r.weight for r in ok)
    strength = max(-1.0, min(1.0, math.fsum(r.weight * r.score for r in ok) / total))
    votes = math.fsum(r.weight * (1.0 if r.score > 0 else -1.0 if r.score < 0 else 0.0) for r in ok)
    confidence = abs(votes) / total
    if strength >= threshold:
        direction = Direction.BUY
    elif strength <= -threshold:
        direction = Direction.SELL
    else:
        direction = Direction.HOLD
    return Combined(direction, strength, confidence, bool(failed), reason, tuple(results))


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


# --------------------------------------------------------------------------- intent life cycle


class IntentStatus(enum.IntEnum):
    """trading.decision.v1.IntentStatus (same numbers)."""

    PENDING = 1
    PLACED = 2
    REFUSED = 3
    EXPIRED = 4


class IntentTrigger(enum.Enum):
    """What moves an intent: execution's answer, or the time-to-live running out."""

    PLACED = "placed"  # PlaceOrder answered with an order
    REFUSED = "refused"  # PlaceOrder refused for good (risk denial, bad request)
    EXPIRED = "expired"  # no answer within the time-to-live


# The intent life cycle, declaratively (like execution's order TRANSITIONS):
# only a PENDING intent moves, and every move ends it. EXPIRED is terminal
# like the others: a late answer for an expired intent changes nothing
# (storage guards every update with "still pending"), because the strategy
# has already been told the intent is given up.
INTENT_TRANSITIONS: Final[Mapping[tuple[IntentStatus, IntentTrigger], IntentStatus]] = MappingProxyType(
    {
        (IntentStatus.PENDING, IntentTrigger.PLACED): IntentStatus.PLACED,
        (IntentStatus.PENDING, IntentTrigger.REFUSED): IntentStatus.REFUSED,
        (IntentStatus.PENDING, IntentTrigger.EXPIRED): IntentStatus.EXPIRED,
    }
)
TERMINAL_INTENT_STATUSES: Final = frozenset(IntentStatus) - {IntentStatus.PENDING}


class InvalidIntentTransition(Exception):
    """A trigger that does not apply to the intent's status (e.g. expiring a placed one)."""


def intent_transition(status: IntentStatus, trigger: IntentTrigger) -> IntentStatus:
    """The status after `trigger`, or InvalidIntentTransition."""
    try:
        return INTENT_TRANSITIONS[(status, trigger)]
    except KeyError:
        raise InvalidIntentTransition(f"{trigger.value} does not apply to a {status.name} intent") from None


def intent_status(*, order_id: str | None, order_error: str | None, expired: bool) -> IntentStatus:
    """The status an intent's stored columns stand for (the row is the state)."""
    if order_id is not None:
        return IntentStatus.PLACED
    if order_error is not None:
        return IntentStatus.REFUSED
    return IntentStatus.EXPIRED if expired else IntentStatus.PENDING


def intent_expiry_cutoff(now: datetime, ttl: timedelta) -> datetime:
    """Intents created at or before this instant are due to expire at `now`."""
    return now - ttl


def intent_is_due(created_at: datetime, now: datetime, ttl: timedelta) -> bool:
    """True when a pending intent created at `created_at` has outlived `ttl`."""
    return created_at <= intent_expiry_cutoff(now, ttl)


def intent_retry_cutoff(now: datetime, ttl: timedelta, answer_within: timedelta) -> datetime:
    """Pending intents created after this instant may still be placed at `now`."""
    return now + answer_within - ttl


def intent_may_retry(created_at: datetime, now: datetime, ttl: timedelta, answer_within: timedelta) -> bool:
    """True when a pending intent may be placed (again) now: only while its
    answer (at most `answer_within`, the PlaceOrder deadline) would still come
    before it expires, so no placement is in flight when the sweeper gives it
    up and EXPIRED stays terminal in practice, not only in the table."""
    return created_at > intent_retry_cutoff(now, ttl, answer_within)
