"""Settings of the notification service: the ``notification`` section of the
settings tree (runtime.config.sections), env ``TRADING_NOTIFICATION__<FIELD>``,
e.g. ``TRADING_NOTIFICATION__ALLOW_PRIVATE_TARGETS=true`` for a receiver on
loopback during local testing."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from runtime.config import section_config


class NotificationSettings(BaseSettings):
    """Webhook target policy, delivery retries and secret encryption."""

    model_config = section_config("notification")

    allow_insecure_http: bool = False
    """Local testing only: accept http:// targets (signatures still protect integrity, but the payload
    travels in clear text)."""
    allow_private_targets: bool = False
    """Local testing only: accept targets that are, or resolve to, loopback, private, link-local or
    otherwise non-public addresses (SSRF guard)."""
    delivery_attempts: int = Field(default=6, ge=1, le=20)
    """Attempts of one delivery before it is dead-lettered (the first included)."""
    backoff_initial_s: float = Field(default=1.0, gt=0)
    """First wait between delivery attempts (exponential backoff with jitter, tenacity's
    wait_exponential_jitter)."""
    backoff_max_s: float = Field(default=60.0, gt=0)
    """Longest wait between delivery attempts."""
    backoff_jitter_s: float = Field(default=1.0, ge=0)
    """Largest random jitter added to each wait."""
    attempt_timeout_s: float = Field(default=5.0, gt=0, le=30)
    """Timeout of one delivery attempt; the contract: any 2xx answer within 5 s counts as delivered."""
    delivery_workers: int = Field(default=8, ge=1, le=256)
    """Deliveries in flight at once (pull subscribers sharing one durable consumer)."""
    secret_encryption_key: str = ""
    """base64url of 32 bytes: the AES-256-GCM key webhook signing secrets are stored under. Empty: the
    secret notification/webhook-key (environment or mounted file), or in environment "local" the
    public development key."""
    run_consumers: bool = True
    """False for API-only replicas: no event consumers and no delivery workers (some other replica
    delivers)."""
    stream_buffer: int = Field(default=1000, ge=10)
    """Notifications buffered per Subscribe stream before a slow client's stream is ended."""
