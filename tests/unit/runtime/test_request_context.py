"""The request context held in a contextvar."""

from __future__ import annotations

import asyncio

import pytest

from runtime.context import (
    RequestContext,
    current_context,
    new_correlation_id,
    require_tenant,
    use_context,
)
from runtime.errors import UnauthenticatedError


def test_require_tenant_without_one_is_unauthenticated() -> None:
    with pytest.raises(UnauthenticatedError):
        require_tenant()
    with use_context(RequestContext(tenant_id="t1")):
        assert require_tenant() == "t1"
    assert current_context() == RequestContext()


def test_time_remaining_counts_down_and_never_goes_negative() -> None:
    assert RequestContext().time_remaining() is None
    ctx = RequestContext().with_deadline_in(10.0)
    remaining = ctx.time_remaining()
    assert remaining is not None and 9.0 < remaining <= 10.0
    assert RequestContext().with_deadline_in(-1.0).time_remaining() == 0.0


async def test_each_task_sees_its_own_context() -> None:
    async def handle(tenant: str) -> str:
        with use_context(RequestContext(tenant_id=tenant, correlation_id=new_correlation_id())):
            await asyncio.sleep(0.001)
            return current_context().tenant_id

    assert await asyncio.gather(*(handle(f"t{i}") for i in range(5))) == [f"t{i}" for i in range(5)]
    assert current_context().tenant_id == ""


def test_correlation_ids_are_unique() -> None:
    assert len({new_correlation_id() for _ in range(100)}) == 100
