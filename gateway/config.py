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

    # Deadline of a call when the client names none, and the most it may ask
    # for (grpc-timeout / X-Request-Timeout).
    default_timeout_s: float = Field(default=5.0, gt=0)
    max_timeout_s: float = Field(default=30.0, gt=0)
    # Largest request body accepted (413 above).
    max_body_bytes: int = Field(default=1 << 20, ge=1)
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

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value
