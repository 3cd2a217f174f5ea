"""Webhook signing secrets: making them, signing with them, storing them.

Signatures follow the Standard Webhooks scheme the contract describes
(trading.notification.v1.Webhook): ``webhook-signature: v1,<base64 of
HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>``, key = the
base64-decoded part of the secret after ``whsec_``.

Storage: notification must sign every delivery, so it needs the secret itself,
not a hash of it. Secrets are stored AES-256-GCM encrypted (the webhook id as
associated data, so a ciphertext cannot be moved to another webhook) under a
key-encryption key from ``TRADING_NOTIFICATION__SECRET_ENCRYPTION_KEY`` or else
the secret ``notification/webhook-key`` (runtime.security.secrets: environment
or mounted file); only RegisterWebhook ever returns the plain secret. In
environment ``local`` with no key set, a fixed, publicly known development key
is used (with a warning).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
# Shown in ListWebhooks to tell secrets apart: "whsec_" plus 4 characters.
SHOWN_PREFIX_CHARS = len(SECRET_PREFIX) + 4
_DEV_KEY = hashlib.sha256(b"trading-platform local development webhook-secret key").digest()
_NONCE_BYTES = 12

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class SecretKeyConfigError(ValueError):
    """The secret encryption key is missing or malformed."""


def new_secret() -> str:
    """A new signing secret: "whsec_" + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret (its base64 part, decoded)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("not a whsec_ secret")
    return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one attempt."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        HEADER_ID: message_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature(secret, message_id, timestamp, body),
    }


def encryption_key(configured: str, environment: str) -> bytes:
    """The secret encryption key from its base64url setting; the public
    development key only in environment "local"."""
    if not configured:
        if environment != "local":
            raise SecretKeyConfigError(
                "TRADING_NOTIFICATION__SECRET_ENCRYPTION_KEY must be set outside environment 'local'"
            )
        log.warning("notification: using the public development secret encryption key (environment 'local')")
        return _DEV_KEY
    try:
        key = base64.urlsafe_b64decode(configured + "=" * (-len(configured) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SecretKeyConfigError("secret encryption key is not base64url") from exc
    if len(key) != 32:
        raise SecretKeyConfigError("secret encryption key must be 32 bytes (AES-256)")
    return key


class SecretBox:
    """Encrypts and decrypts signing secrets for storage."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, webhook_id: str, secret: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), webhook_id.encode())

    def open(self, webhook_id: str, sealed: bytes) -> str:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, webhook_id.encode()).decode()
