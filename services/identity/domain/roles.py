"""Roles and their scopes, and e-mail normalisation. Pure: no I/O.

Scopes of each role follow the comments of `trading.identity.v1.Role`; "every
`*:read` scope" is derived from the contracts (every read scope some RPC
declares in its `(trading.common.v1.method)` policy), so a new service's read
scope reaches viewers without a change here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Role names as stored in PostgreSQL and carried in tokens / `x-roles`
# (the Role enum names without the ROLE_ prefix).
TRADER = "TRADER"
VIEWER = "VIEWER"
ADMIN = "ADMIN"
ROLES: tuple[str, ...] = (TRADER, VIEWER, ADMIN)

ADMIN_SCOPE = "admin"
# Read scopes every role gets even if no RPC declares them yet (the Role
# comments name them: orders, positions, analytics).
BASE_READ_SCOPES = frozenset({"marketdata:read", "orders:read", "positions:read", "analytics:read"})
TRADER_EXTRA = frozenset({"orders:write", "strategies:write", "webhooks:write", "identity:write"})
ADMIN_EXTRA = frozenset({ADMIN_SCOPE, "risk:write", "risk:admin"})


@dataclass(frozen=True, slots=True)
class RoleScopes:
    """Scopes granted by each role, given the read scopes the contracts declare."""

    read: frozenset[str]

    @classmethod
    def from_declared(cls, declared: Iterable[str]) -> RoleScopes:
        return cls(read=BASE_READ_SCOPES | {s for s in declared if s.endswith(":read")})

    def of_role(self, role: str) -> frozenset[str]:
        if role == TRADER:
            return self.read | TRADER_EXTRA
        if role == VIEWER:
            return self.read
        if role == ADMIN:
            return self.read | ADMIN_EXTRA
        raise ValueError(f"unknown role {role!r}")

    def of_roles(self, roles: Iterable[str]) -> frozenset[str]:
        """The union of the scopes of `roles` (a user with several roles gets all)."""
        out: frozenset[str] = frozenset()
        for role in roles:
            out |= self.of_role(role)
        return out


def normalize_email(email: str) -> str:
    """E-mails are unique per tenant case-insensitively: stored lower-cased."""
    return email.strip().lower()
