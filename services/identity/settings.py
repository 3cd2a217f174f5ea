"""Settings of the identity process (env ``TRADING_IDENTITY_*``; move into
runtime.config later, like marketdata's FeedSettings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IdentitySettings(BaseSettings):
    """Token lifetimes, issuer/audience, key handling, password policy, seeding."""

    model_config = SettingsConfigDict(env_prefix="TRADING_IDENTITY_", extra="ignore")

    # `iss` and `aud` of access tokens; verifiers (the gateway) check both.
    issuer: str = "trading-identity"
    audience: str = "trading-api"
    # Access tokens are short-lived: revocation (logout, role change) only
    # takes effect when they expire.
    access_token_ttl_s: int = Field(default=300, ge=10, le=3600)
    # Refresh tokens: absolute lifetime of a login session (rotation keeps the
    # expiry of the login).
    refresh_token_ttl_s: int = Field(default=14 * 86400, ge=60)
    # Signing keys: automatic rotation age, and how often a replica rereads
    # the current key and the JWKS (a CLI rotation is picked up within it).
    signing_key_rotate_after_s: int = Field(default=30 * 86400, ge=60)
    key_reload_s: float = Field(default=10.0, gt=0, le=60)
    # base64url of 32 bytes; empty means the public dev KEK (environment "local" only).
    key_encryption_key: str = ""
    # argon2id parameters (changing them re-hashes each password at its next login).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    # Login failures per (tenant slug, e-mail) within the window before Login
    # answers RESOURCE_EXHAUSTED: a backstop behind the gateway's throttle
    # (per account and source, gateway.ratelimit.LoginThrottle), so loose and
    # short: a lockout an attacker can trigger locks the owner out too.
    login_max_failures: int = Field(default=50, ge=1)
    login_failure_window_s: int = Field(default=60, ge=1)
    # Password verifications (argon2: CPU and memory) running at once, and
    # how long a login waits for a slot before RESOURCE_EXHAUSTED with
    # Retry-After; 0 concurrent: the number of CPUs.
    login_max_concurrent_verifications: int = Field(default=0, ge=0)
    login_verification_wait_s: float = Field(default=0.5, ge=0)
    # Seed the demo tenant "demo" with trader@demo.local / demo-password (local use).
    seed_demo: bool = True
    # Seed a platform operator (tenant "platform", role ADMIN) when a password is set.
    platform_admin_email: str = "operator@platform.local"
    platform_admin_password: str = ""
