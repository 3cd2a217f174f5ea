"""Pure decision rules: ensemble combination, signal -> intent, client order ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.decision.domain import (
    Direction,
    Intent,
    ModelResult,
    NoIntent,
    Outcome,
    Side,
    StrategyConfig,
    client_order_id,
    combine,
    decide_intent,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def ok(model: str, score: float, weight: float = 1.0) -> ModelResult:
    return ModelResult(model, "2025-01-01.1", Outcome.OK, score=score, weight=weight)


def failed(model: str, outcome: Outcome = Outcome.ERROR) -> ModelResult:
    return ModelResult(model, "2025-01-01.1", outcome, error="boom")


def strategy(**changes: object) -> StrategyConfig:
    base = {
        "tenant_id": "t1",
        "strategy_id": "s1",
        "symbols": frozenset({"BTC-USD"}),
        "enabled": True,
        "max_position": Decimal("2"),
        "fixed_quantity": Decimal("1"),
        "model_ids": ("a", "b"),
        "signal_threshold": 0.2,
        "cooldown": timedelta(0),
        "version": 1,
    }
    base.update(changes)
    return StrategyConfig(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------- combine


def test_strength_is_the_weighted_mean_and_direction_follows_the_threshold() -> None:
    c = combine([ok("a", 0.6, weight=3), ok("b", -0.2, weight=1)], threshold=0.3)
    assert c.strength == pytest.approx((3 * 0.6 - 0.2) / 4)
    assert c.direction is Direction.BUY
    assert c.confidence == pytest.approx(0.5)  # 3 for, 1 against, of 4
    assert not c.fallback and c.fallback_reason == ""

    assert combine([ok("a", -0.5), ok("b", -0.3)], threshold=0.3).direction is Direction.SELL
    assert combine([ok("a", -0.5), ok("b", -0.3)], threshold=0.3).confidence == 1.0
    weak = combine([ok("a", 0.25), ok("b", 0.1)], threshold=0.3)
    assert weak.direction is Direction.HOLD and weak.strength == pytest.approx(0.175)


def test_threshold_is_inclusive() -> None:
    assert combine([ok("a", 0.5)], threshold=0.5).direction is Direction.BUY
    assert combine([ok("a", -0.5)], threshold=0.5).direction is Direction.SELL


def test_a_failed_model_falls_back_to_the_remaining_ones() -> None:
    c = combine([ok("a", 0.8), failed("b", Outcome.TIMEOUT)], threshold=0.5)
    assert c.direction is Direction.BUY and c.strength == pytest.approx(0.8)
    assert c.fallback
    assert "b timeout" in c.fallback_reason and "remaining" in c.fallback_reason
    assert [r.model_id for r in c.results] == ["a", "b"]


def test_no_model_left_means_flat() -> None:
    c = combine([failed("a"), failed("b", Outcome.SKIPPED)], threshold=0.1)
    assert (c.direction, c.strength, c.confidence, c.fallback) == (Direction.HOLD, 0.0, 0.0, True)
    assert "flat" in c.fallback_reason


# ---------------------------------------------------------------- intents


def test_a_strong_signal_makes_an_intent_of_the_fixed_size() -> None:
    assert decide_intent(strategy(), "BTC-USD", Direction.BUY, Decimal(0), None, NOW) == Intent(
        Side.BUY, Decimal(1)
    )
    assert decide_intent(strategy(), "BTC-USD", Direction.SELL, Decimal(0), None, NOW) == Intent(
        Side.SELL, Decimal(1)
    )


def test_hold_disabled_and_other_symbols_make_no_intent() -> None:
    assert decide_intent(strategy(), "BTC-USD", Direction.HOLD, Decimal(0), None, NOW) is NoIntent.HOLD
    off = strategy(enabled=False)
    assert decide_intent(off, "BTC-USD", Direction.BUY, Decimal(0), None, NOW) is NoIntent.DISABLED
    assert (
        decide_intent(strategy(), "ETH-USD", Direction.BUY, Decimal(0), None, NOW)
        is NoIntent.SYMBOL_NOT_TRADED
    )


def test_max_position_blocks_growth_but_not_reduction() -> None:
    s = strategy(max_position=Decimal("2"), fixed_quantity=Decimal("1"))
    assert isinstance(decide_intent(s, "BTC-USD", Direction.BUY, Decimal("1"), None, NOW), Intent)
    assert decide_intent(s, "BTC-USD", Direction.BUY, Decimal("2"), None, NOW) is NoIntent.POSITION_LIMIT
    assert decide_intent(s, "BTC-USD", Direction.SELL, Decimal("-2"), None, NOW) is NoIntent.POSITION_LIMIT
    assert decide_intent(s, "BTC-USD", Direction.SELL, Decimal("2"), None, NOW) == Intent(
        Side.SELL, Decimal(1)
    )
    # A size larger than the limit never opens a position.
    big = strategy(max_position=Decimal("0.5"), fixed_quantity=Decimal("1"))
    assert decide_intent(big, "BTC-USD", Direction.BUY, Decimal(0), None, NOW) is NoIntent.POSITION_LIMIT


def test_cooldown_spaces_intents() -> None:
    s = strategy(cooldown=timedelta(seconds=10))
    recent = NOW - timedelta(seconds=3)
    assert decide_intent(s, "BTC-USD", Direction.BUY, Decimal(0), recent, NOW) is NoIntent.COOLDOWN
    old = NOW - timedelta(seconds=10)
    assert isinstance(decide_intent(s, "BTC-USD", Direction.BUY, Decimal(0), old, NOW), Intent)


# ---------------------------------------------------------------- client order ids


def test_client_order_ids_are_deterministic_and_valid() -> None:
    t, s, sym, fs, seq, ns = "t1", "s1", "BTC-USD", "v1:x", 42, 1_700_000_000_123_456_789
    coid = client_order_id(t, s, sym, fs, seq, ns)
    assert coid == client_order_id(t, s, sym, fs, seq, ns)
    assert re.fullmatch(r"^[A-Za-z0-9._:-]{1,64}$", coid) and coid.startswith("dc-")
    others = {
        client_order_id("t2", s, sym, fs, seq, ns),
        client_order_id(t, "s2", sym, fs, seq, ns),
        client_order_id(t, s, "ETH-USD", fs, seq, ns),
        client_order_id(t, s, sym, "v2:x", seq, ns),
        client_order_id(t, s, sym, fs, 43, ns),
        client_order_id(t, s, sym, fs, seq, ns + 1),  # a restarted feed reusing sequence 42
    }
    assert coid not in others and len(others) == 6
