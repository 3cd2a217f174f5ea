"""Settings of the features service: the ``features`` section of the settings
tree (runtime.config.sections), env ``TRADING_FEATURES__<FIELD>``, e.g.
``TRADING_FEATURES__PARTITION=1/2``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from runtime.config import section_config
from services.marketdata.domain import TICK_PARTITIONS

_SHARE = re.compile(r"(\d+)/(\d+)")


class FeaturesSettings(BaseSettings):
    """Which symbols a features process computes, and how its vectors reach Kafka."""

    model_config = section_config("features")

    partition: str = "0/1"
    """``i/n``: this process takes share i (0-based) of n of the symbols, the ticks of the symbol partitions
    p with p mod n = i (marketdata spreads symbols over 16 partitions by a hash of the symbol:
    services/marketdata/domain/batches.py), so n processes started with 0/n .. n-1/n see every symbol
    exactly once; n at most 16. Replicas started with the same share form a replica group that shares
    the publishing of those symbols (the default 0/1: every symbol, one group)."""
    engine: Literal["scalar", "vectorised"] = "scalar"
    """How a batch of ticks updates the indicators: "scalar", symbol by symbol, or "vectorised", RSI and
    volatility of the batch's symbols in numpy columns (services/features/domain/batch.py; the same values).
    numpy pays its per-call overhead per round of a batch, so "vectorised" is slower until a batch holds
    ticks of ~100 symbols or more (measured per tick: 8 symbols 57 vs 124 us, 64: 58 vs 66 us, 256: 86 vs
    77 us); with the 8 instruments of the local platform, "scalar"."""
    kafka_batch_bytes: int = Field(default=1_048_576, ge=16_384)
    """Bytes per Kafka partition in one produce request for the vectors' replay copies. The producer has
    one request in flight per broker: measured on tansu (S3 storage) with 260-byte records, 16 KiB batches
    took ~11,600 records/s, 1 MiB ~35,000."""

    @field_validator("partition")
    @classmethod
    def _share(cls, value: str) -> str:
        share = _SHARE.fullmatch(value.strip())
        if share is None:
            raise ValueError(f"partition {value!r}: expected i/n, e.g. 0/2")
        index, shares = int(share[1]), int(share[2])
        if not 1 <= shares <= TICK_PARTITIONS or index >= shares:
            raise ValueError(f"partition {value!r}: need 0 <= i < n <= {TICK_PARTITIONS}")
        return f"{index}/{shares}"

    @property
    def share(self) -> tuple[int, int]:
        """``(i, n)`` of :attr:`partition`."""
        index, shares = self.partition.split("/")
        return int(index), int(shares)
