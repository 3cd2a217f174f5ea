"""Each principal's credentials for the data stores, built in this one place.

- PostgreSQL: :func:`postgres_dsn` (the service's login role
  ``trading_<svc>_app`` on the configured server and database) and
  :func:`postgres_password` (``get_secret(settings, "postgres", svc)``, read
  again for every new connection, so a rotated secret needs no restart).
- Redis: :func:`redis_auth` / :func:`open_redis` (ACL user = the principal,
  password ``get_secret(settings, "redis", principal)``).
- Kafka: :func:`kafka_settings_for` fills in SASL credentials (user = the
  principal, password ``get_secret(settings, "kafka", principal)``) when
  ``kafka.sasl_mechanism`` is set (a real Kafka); the local tansu cannot
  authenticate clients it can also create users on (docs/security.md).

See docs/security.md for what each credential may do.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr
from redis.asyncio import Redis

from runtime.config import KafkaSettings, Settings
from runtime.security.postgres_roles import app_role
from runtime.security.principals import check_principal
from runtime.security.redis_acl import ADMIN_USER
from runtime.security.secrets import get_secret
from runtime.storage.redis import create_redis

# The Redis user of the infrastructure tooling (LocalInfra, tests): every
# command and key. Not a principal: no service process holds it.
REDIS_ADMIN = ADMIN_USER


def postgres_dsn(settings: Settings, service: str) -> str:
    """``settings.postgres.dsn`` with the user replaced by the service's login
    role and no password (see :func:`postgres_password`)."""
    check_principal(service)
    parts = urlsplit(settings.postgres.dsn)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{quote(app_role(service), safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def postgres_password(settings: Settings, service: str) -> Callable[[], str]:
    """The service's PostgreSQL password, looked up on every call."""
    check_principal(service)
    return lambda: get_secret(settings, "postgres", service)


def redis_auth(settings: Settings, principal: str) -> dict[str, str]:
    """``username``/``password`` of `principal`'s Redis ACL user."""
    if principal != REDIS_ADMIN:
        check_principal(principal)
    return {"username": principal, "password": get_secret(settings, "redis", principal)}


def open_redis(settings: Settings, principal: str, *, decode_responses: bool = False) -> Redis:
    """A client of ``settings.redis`` authenticated as `principal`."""
    auth = redis_auth(settings, principal)
    # Its commands are timed with service=principal (runtime.storage.metrics).
    return create_redis(
        settings.redis,
        decode_responses=decode_responses,
        username=auth["username"],
        password=auth["password"],
        service=principal,
    )


def kafka_settings_for(settings: Settings, principal: str) -> KafkaSettings:
    """``settings.kafka`` carrying `principal`'s SASL credentials when SASL is configured."""
    kafka = settings.kafka
    if not kafka.sasl_mechanism:
        return kafka
    check_principal(principal)
    return kafka.model_copy(
        update={
            "sasl_username": principal,
            "sasl_password": SecretStr(get_secret(settings, "kafka", principal)),
        }
    )
