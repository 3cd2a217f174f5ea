"""Settings of the execution service: the ``execution`` section of the
settings tree (runtime.config.sections), env ``TRADING_EXECUTION__<FIELD>``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from runtime.config import section_config


class ExecutionSettings(BaseSettings):
    """The order path's pre-trade check."""

    model_config = section_config("execution")

    risk_check: Literal["embedded", "remote"] = "embedded"
    """Where PlaceOrder's pre-trade check runs. "embedded": risk's check in this process, on risk's state
    in Redis (one round trip), with risk's CheckOrder deciding every check that is not a plain approval
    (services.execution.adapters.risk). "remote": every check is risk's CheckOrder over gRPC."""
    risk_timeout_s: float = Field(default=1.0, gt=0, le=10)
    """Deadline of a CheckOrder call to risk; past it the order is refused as RISK_UNAVAILABLE."""
