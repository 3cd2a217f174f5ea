"""Per-service secrets (passwords for NATS, Redis, PostgreSQL, Kafka users).

None lives in the repository or the image. A secret named ``<system>/<principal>``
(e.g. ``redis/risk``) is read, first match wins, from

1. the environment: ``TRADING_SECRET__<SYSTEM>__<PRINCIPAL>`` (upper case,
   ``-`` as ``_``), how an orchestrator injects it;
2. a file ``<secrets_dir>/<system>/<principal>``: how Kubernetes secrets,
   Vault agents or ``docker secret`` mount them;
3. only under a development profile: generated on first use (random,
   URL-safe, file mode 0600), so ``./dev setup`` / ``./dev run`` and the test
   fixtures create fresh development secrets for every checkout.

Under the production profile a missing secret is an error at start-up, never
a generated or default value.
"""

from __future__ import annotations

import os
import re
import secrets as _random
from pathlib import Path

from runtime.config import Settings
from runtime.security.files import create_once

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class MissingSecretError(RuntimeError):
    """A secret the production profile needs was neither in the environment nor mounted."""


def _check(part: str) -> str:
    if _NAME_RE.fullmatch(part) is None:
        raise ValueError(f"invalid secret name part: {part!r}")
    return part


def env_name(system: str, principal: str) -> str:
    """The environment variable that carries ``system/principal``."""
    return f"TRADING_SECRET__{system.upper()}__{principal.upper()}".replace("-", "_")


def secret_path(settings: Settings, system: str, principal: str) -> Path:
    """Where the file form of ``system/principal`` lives."""
    return settings.security.secrets_path(settings.var_dir) / _check(system) / _check(principal)


def get_secret(settings: Settings, system: str, principal: str, *, nbytes: int = 24) -> str:
    """The secret ``system/principal`` (see the module docstring for the order);
    a generated one holds ``nbytes`` random bytes, base64url."""
    value = os.environ.get(env_name(system, principal))
    if value:
        return value
    path = secret_path(settings, system, principal)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    if not settings.security.is_development(settings.environment):
        raise MissingSecretError(
            f"secret {system}/{principal} not found: set {env_name(system, principal)} or mount {path}"
        )
    return _generate(path, nbytes)


def _generate(path: Path, nbytes: int) -> str:
    # A concurrent process may generate it first: its value wins.
    create_once(path, _random.token_urlsafe(nbytes))
    return path.read_text().strip()
