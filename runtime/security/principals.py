"""The principals of the platform: who may hold a credential inside it.

One identity per service process (its certificate, its NATS, Redis, Kafka and
PostgreSQL users) plus ``operator`` for the operator CLI (``tradingctl``).
Every other table of the security layer (RPC callers, NATS permissions, Redis
ACLs, database roles) is keyed by these names and checked against this list.
"""

from __future__ import annotations

from runtime.config import SERVICE_NAMES

# The operator CLI: audit verification, dead-letter re-drive.
OPERATOR = "operator"

PRINCIPALS: tuple[str, ...] = (*SERVICE_NAMES, OPERATOR)


def check_principal(name: str) -> str:
    """``name`` if it is a known principal, else ValueError."""
    if name not in PRINCIPALS:
        raise ValueError(f"unknown principal {name!r}; known: {', '.join(PRINCIPALS)}")
    return name
