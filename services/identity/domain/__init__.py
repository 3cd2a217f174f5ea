"""Identity's pure rules: no I/O.

- `roles`: roles and their scopes, e-mail normalisation;
- `passwords`: the argon2id password policy;
- `refresh`: the refresh token format and the hash of high-entropy secrets.

The public names are re-exported here (``from services.identity.domain import X``).
"""

from services.identity.domain.passwords import PasswordPolicy, Passwords
from services.identity.domain.refresh import (
    REFRESH_PREFIX,
    MalformedRefreshToken,
    new_refresh_token,
    refresh_token_tenant,
    token_hash,
)
from services.identity.domain.roles import (
    ADMIN,
    ADMIN_EXTRA,
    ADMIN_SCOPE,
    BASE_READ_SCOPES,
    ROLES,
    TRADER,
    TRADER_EXTRA,
    VIEWER,
    RoleScopes,
    normalize_email,
)

__all__ = [
    "ADMIN",
    "ADMIN_EXTRA",
    "ADMIN_SCOPE",
    "BASE_READ_SCOPES",
    "REFRESH_PREFIX",
    "ROLES",
    "TRADER",
    "TRADER_EXTRA",
    "VIEWER",
    "MalformedRefreshToken",
    "PasswordPolicy",
    "Passwords",
    "RoleScopes",
    "new_refresh_token",
    "normalize_email",
    "refresh_token_tenant",
    "token_hash",
]
