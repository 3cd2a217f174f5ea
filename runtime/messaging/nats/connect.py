"""Every NATS connection of the platform is opened here, with its principal's
credentials (runtime.security.nats_permissions says what each may do).

The user is the principal's name, the password ``get_secret(settings,
"nats", principal)``, and replies come to the principal's own inbox prefix
``_INBOX.<principal>``: the only inbox its user may subscribe to.
"""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from runtime.config import Settings
from runtime.security.nats_permissions import HARNESS, NATS_SECRET, inbox_prefix
from runtime.security.principals import check_principal
from runtime.security.secrets import get_secret


def nats_credentials(settings: Settings, principal: str) -> tuple[str, str]:
    """(user, password) of ``principal`` on the platform's NATS server."""
    if principal != HARNESS:
        check_principal(principal)
    return principal, get_secret(settings, NATS_SECRET, principal)


async def connect_nats(settings: Settings, principal: str, **options: Any) -> NatsClient:
    """A connection to ``settings.nats.url`` as ``principal``. ``options`` go
    to ``nats.connect`` (``name`` defaults to the principal)."""
    user, password = nats_credentials(settings, principal)
    options.setdefault("name", principal)
    client: NatsClient = await nats.connect(
        settings.nats.url, user=user, password=password, inbox_prefix=inbox_prefix(principal), **options
    )
    return client
