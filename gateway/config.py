"""Settings of the gateway's request handling (env ``TRADING_GATEWAY__*``, the
same prefix as runtime.config's GatewaySettings, which ignores these extra
keys; move them into runtime.config.GatewaySettings when convenient)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class GatewayOptions(BaseSettings):
    """Deadlines, limits, CORS, auth and stream settings of the gateway."""

    model_config = SettingsConfigDict(env_prefix="TRADING_GATEWAY__", extra="ignore")

    # One INFO line per request (method, route, status, duration, correlation id, tenant).
    access_log: bool = True
    # Deadline of a call when the client names none, and the most it may ask
    # for (grpc-timeout / X-Request-Timeout).
    default_timeout_s: float = Field(default=5.0, gt=0)
    max_timeout_s: float = Field(default=30.0, gt=0)
    # Largest request body accepted (413 above).
    max_body_bytes: int = Field(default=1 << 20, ge=1)
    # The input guard (gateway.limits): JSON nesting, digits per number
    # literal (values that need more are decimal strings), query and path size.
    max_json_depth: int = Field(default=32, ge=2)
    max_number_chars: int = Field(default=32, ge=20)  # >= the 20 digits of a uint64
    max_query_bytes: int = Field(default=8192, ge=64)
    max_query_params: int = Field(default=64, ge=1)
    max_path_bytes: int = Field(default=2048, ge=64)
    # Proxies (CIDRs) whose X-Forwarded-For is believed when they are the peer;
    # the client's source is then the rightmost address that is not one of them.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Login throttle (gateway.ratelimit.LoginThrottle): per (account, source),
    # ``login_free_attempts`` attempts, then a wait doubling from
    # ``login_backoff_base_s`` up to ``login_backoff_max_s``; a success resets
    # it. Per account (every source): ``login_account_attempts`` failed
    # attempts per ``login_account_window_s``, a rate, not a lockout (a
    # success gives its attempt back). 0 attempts disables.
    login_free_attempts: int = Field(default=5, ge=0)
    login_backoff_base_s: float = Field(default=1.0, gt=0)
    login_backoff_max_s: float = Field(default=900.0, gt=0)
    login_account_attempts: int = Field(default=30, ge=0)
    login_account_window_s: int = Field(default=60, ge=1)
    # CORS: allowed origins ("*" for any); empty turns CORS off.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_max_age_s: int = 600
    # Per-tenant rate limit (anonymous callers: per client address): requests
    # per window; 0 disables.
    rate_limit_requests: int = Field(default=600, ge=0)
    rate_limit_window_s: int = Field(default=60, ge=1)
    # Access tokens: expected issuer and audience (identity's settings).
    jwt_issuer: str = "trading-identity"
    jwt_audience: str = "trading-api"
    # Bounded JWKS refresh on unknown key ids, and the key set's maximum age.
    jwks_min_refresh_s: float = Field(default=1.0, ge=0)  # <= the verifier's max wait: a new kid is fetched
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    # Server-sent events / WebSocket: heartbeat interval.
    stream_heartbeat_s: float = Field(default=15.0, gt=0)

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value
