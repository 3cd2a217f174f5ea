"""Settings of the identity process: the ``identity`` section of the settings
tree (runtime.config.sections), env ``TRADING_IDENTITY__<FIELD>``, e.g.
``TRADING_IDENTITY__ACCESS_TOKEN_TTL_S=600``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from runtime.config import section_config


class IdentitySettings(BaseSettings):
    """Token lifetimes, issuer/audience, key handling, password policy, seeding."""

    model_config = section_config("identity")

    issuer: str = "trading-identity"
    """`iss` of access tokens; verifiers (the gateway) check it."""
    audience: str = "trading-api"
    """`aud` of access tokens; verifiers (the gateway) check it."""
    access_token_ttl_s: int = Field(default=300, ge=10, le=3600)
    """Lifetime of an access token; short, because revocation (logout, role change) only takes effect when
    it expires."""
    refresh_token_ttl_s: int = Field(default=14 * 86400, ge=60)
    """Absolute lifetime of a login session (rotating its refresh token keeps the login's expiry)."""
    signing_key_rotate_after_s: int = Field(default=30 * 86400, ge=60)
    """Age at which the token signing key is rotated automatically."""
    key_reload_s: float = Field(default=10.0, gt=0, le=60)
    """How often a replica rereads the current signing key and the JWKS (a CLI rotation is picked up within
    it)."""
    key_encryption_key: str = ""
    """base64url of 32 bytes: the key signing keys are stored under; empty: the public development key
    (environment "local" only)."""
    argon2_time_cost: int = Field(default=3, ge=1)
    """argon2id iterations (changing a parameter re-hashes each password at its next login)."""
    argon2_memory_kib: int = Field(default=65536, ge=8)
    """argon2id memory, in KiB."""
    argon2_parallelism: int = Field(default=4, ge=1)
    """argon2id lanes."""
    login_max_failures: int = Field(default=50, ge=1)
    """Login failures per (tenant slug, e-mail) within the window before Login answers
    RESOURCE_EXHAUSTED: a backstop behind the gateway's throttle (per account and source,
    gateway.ratelimit.LoginThrottle), so loose and short: a lockout an attacker can trigger locks the
    owner out too."""
    login_failure_window_s: int = Field(default=60, ge=1)
    """The window of `login_max_failures`."""
    login_max_concurrent_verifications: int = Field(default=0, ge=0)
    """Password verifications (argon2: CPU and memory) running at once; 0: the number of CPUs."""
    login_verification_wait_s: float = Field(default=0.5, ge=0)
    """How long a login waits for a verification slot before RESOURCE_EXHAUSTED with Retry-After."""
    seed_demo: bool = True
    """Seed the demo tenant "demo" with trader@demo.local / demo-password (local use)."""
    platform_admin_email: str = "operator@platform.local"
    """E-mail of the platform operator (tenant "platform", role ADMIN) seeded when `platform_admin_password`
    is set."""
    platform_admin_password: str = ""
    """Password of the seeded platform operator; empty: none is seeded."""
