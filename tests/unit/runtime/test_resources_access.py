"""A service's connections are typed, non-optional properties of Resources;
one it did not declare (or before open()) is an error naming its needs."""

from __future__ import annotations

import pytest

from runtime.config import Settings
from runtime.resources import ResourceNotOpenError, Resources


def test_an_undeclared_connection_is_refused_with_the_needs() -> None:
    resources = Resources.for_service(Settings(), "risk", ["redis", "kafka"])
    with pytest.raises(ResourceNotOpenError, match=r"risk: postgres is not open \(needs: kafka, redis;"):
        _ = resources.postgres
    for name in ("clickhouse", "nats", "nats_publisher"):
        with pytest.raises(ResourceNotOpenError):
            getattr(resources, name)


def test_a_declared_connection_is_refused_before_open() -> None:
    resources = Resources.for_service(Settings(), "risk", ["redis"])
    with pytest.raises(ResourceNotOpenError, match="risk: redis is not open"):
        _ = resources.redis


async def test_nothing_declared_is_ready_and_closes() -> None:
    resources = Resources.for_service(Settings(), "gateway", [])
    await resources.open(timeout_s=1)
    assert await resources.ready()
    await resources.close()
