"""The gateway's settings: the ``gateway`` section of the settings tree
(runtime.config.GatewaySettings, env ``TRADING_GATEWAY__*``), read here on its
own so the request-handling code and tests can build it without a whole
:class:`runtime.config.Settings`."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from runtime.config import GatewaySettings, section_config


class GatewayOptions(BaseSettings, GatewaySettings):
    """Deadlines, limits, CORS, auth and stream settings of the gateway (every
    field of GatewaySettings, from ``TRADING_GATEWAY__*``)."""

    model_config = section_config("gateway")
