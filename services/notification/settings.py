"""Settings of the notification service (env prefix ``TRADING_NOTIFICATION__``,
the nested form ``runtime.config`` uses, so they can move there unchanged),
e.g. ``TRADING_NOTIFICATION__ALLOW_PRIVATE_TARGETS=true`` for a receiver on
loopback during local testing."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotificationSettings(BaseSettings):
    """Webhook target policy, delivery retries and secret encryption."""

    model_config = SettingsConfigDict(env_prefix="TRADING_NOTIFICATION__", extra="ignore")

    # Local testing only: accept http:// targets (signatures still protect
    # integrity, but the payload travels in clear text).
    allow_insecure_http: bool = False
    # Local testing only: accept targets that are, or resolve to, loopback,
    # private, link-local or otherwise non-public addresses (SSRF guard).
    allow_private_targets: bool = False
    # Attempts of one delivery before it is dead-lettered (the first included).
    delivery_attempts: int = Field(default=6, ge=1, le=20)
    # Exponential backoff with jitter between attempts (tenacity's wait_exponential_jitter).
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    backoff_jitter_s: float = Field(default=1.0, ge=0)
    # The contract: any 2xx answer within 5 s counts as delivered.
    attempt_timeout_s: float = Field(default=5.0, gt=0, le=30)
    # Deliveries in flight at once (pull subscribers sharing one durable consumer).
    delivery_workers: int = Field(default=8, ge=1, le=256)
    # base64url of 32 bytes: the AES-256-GCM key webhook signing secrets are
    # stored under. Empty: the secret notification/webhook-key (environment or
    # mounted file), or in environment "local" the public development key.
    secret_encryption_key: str = ""
    # False for API-only replicas: no event consumers and no delivery workers
    # (some other replica delivers).
    run_consumers: bool = True
    # Notifications buffered per Subscribe stream before a slow client's stream is ended.
    stream_buffer: int = Field(default=1000, ge=10)
