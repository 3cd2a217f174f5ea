"""Names of marketdata's shared cache in Redis, defined once.

Market data is the same for every tenant, so these keys are global (not
tenant-scoped): marketdata writes them, risk, execution, portfolio, features
and decision read them.
"""

from __future__ import annotations

from redis.asyncio import Redis

# Set of every listed instrument's symbol (marketdata adds them at start).
INSTRUMENTS_KEY = "md:instruments"


def quote_key(symbol: str) -> str:
    """Key of a symbol's last quote: serialized `trading.common.v1.Quote` bytes."""
    return f"md:quote:{symbol}"


async def is_known_instrument(redis: Redis, symbol: str) -> bool:
    """True for a listed symbol, or one marketdata has quoted; also True while
    marketdata has never published its instrument set (nothing to check against)."""
    pipe = redis.pipeline(transaction=False)
    pipe.exists(INSTRUMENTS_KEY)
    pipe.sismember(INSTRUMENTS_KEY, symbol)
    pipe.exists(quote_key(symbol))
    have_set, listed, quoted = await pipe.execute()
    return not have_set or bool(listed) or bool(quoted)
