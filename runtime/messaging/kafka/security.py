"""How every Kafka client of the platform authenticates, in one place.

Producers, consumers, the admin client and the dead-letter reader all pass
``**client_security(settings)`` to aiokafka. With the defaults (the local
tansu) that is nothing: PLAINTEXT, no SASL. Against a real Kafka,
``security_protocol=SASL_SSL`` and ``sasl_mechanism=SCRAM-SHA-512`` make each
process log in as its principal (:func:`runtime.security.store_credentials.kafka_settings_for`
fills in the user and password), over TLS verified against ``ssl_cafile``.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from runtime.config import KafkaSettings


def client_security(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for `settings`' transport security and SASL login."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.ssl_cafile) if settings.ssl_cafile is not None else None
        options["ssl_context"] = create_ssl_context(cafile=cafile)
    if settings.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if not settings.sasl_mechanism or not settings.sasl_username:
            raise ValueError(
                f"kafka.security_protocol={settings.security_protocol} needs kafka.sasl_mechanism and the "
                "principal's credentials (runtime.security.store_credentials.kafka_settings_for)"
            )
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value(),
        )
    return options
