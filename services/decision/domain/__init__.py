"""Decision's pure logic (no I/O), by concern:

- :mod:`.ensemble`: feature vectors to model inputs, the models' answers
  combined into a signal (the conventions of scores, strength, confidence
  and direction are stated there);
- :mod:`.strategies`: a strategy's rules from a signal to an order intent,
  and the intent's deterministic client order id;
- :mod:`.intents`: the order intent's life cycle (statuses, transitions,
  expiry and retry cut-offs);
- :mod:`.embedding`: the market state embedding (a window of a symbol's
  feature vectors as one unit vector);
- :mod:`.analog`: the analog model (the nearest past states vote);
- :mod:`.drift`: the live inputs' drift from training (PSI);
- :mod:`.evaluation`: walk-forward evaluation and the gate a model must pass.

The names of the first three are re-exported here (``from
services.decision.domain import combine``); the other modules are imported
by name (``from services.decision.domain import embedding``), so importing
this package does not load numpy or scikit-learn.
"""

from __future__ import annotations

from services.decision.domain.ensemble import (
    FEATURE_NAMES,
    Combined,
    Direction,
    ModelResult,
    Outcome,
    combine,
    feature_row,
)
from services.decision.domain.intents import (
    INTENT_TRANSITIONS,
    TERMINAL_INTENT_STATUSES,
    IntentStatus,
    IntentTrigger,
    InvalidIntentTransition,
    intent_expiry_cutoff,
    intent_is_due,
    intent_may_retry,
    intent_retry_cutoff,
    intent_status,
    intent_transition,
)
from services.decision.domain.strategies import (
    CLIENT_ORDER_ID_PREFIX,
    Intent,
    NoIntent,
    Side,
    StrategyConfig,
    client_order_id,
    decide_intent,
)

__all__ = [
    "CLIENT_ORDER_ID_PREFIX",
    "FEATURE_NAMES",
    "INTENT_TRANSITIONS",
    "TERMINAL_INTENT_STATUSES",
    "Combined",
    "Direction",
    "Intent",
    "IntentStatus",
    "IntentTrigger",
    "InvalidIntentTransition",
    "ModelResult",
    "NoIntent",
    "Outcome",
    "Side",
    "StrategyConfig",
    "client_order_id",
    "combine",
    "decide_intent",
    "feature_row",
    "intent_expiry_cutoff",
    "intent_is_due",
    "intent_may_retry",
    "intent_retry_cutoff",
    "intent_status",
    "intent_transition",
]
