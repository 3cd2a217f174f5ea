"""Which failed calls the client repeats, and how long it waits."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message
from tenacity import RetryCallState

from runtime.config import ClientSettings
from runtime.errors import STATUS_DETAILS_KEY, CircuitOpenError, retry_info, status
from runtime.grpc_client import BREAKER_FAILURE_CODES, RetryPolicy


def rpc_error(code: grpc.StatusCode, *details: Message) -> grpc.aio.AioRpcError:
    st = status(code, "boom", *details)
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((STATUS_DETAILS_KEY, st.SerializeToString())),
        details="boom",
    )


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(ClientSettings(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05))


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_non_idempotent_calls_are_never_retried(policy: RetryPolicy, code: grpc.StatusCode) -> None:
    assert not policy.is_retryable(False, rpc_error(code))
    assert not policy.is_retryable(False, rpc_error(code, retry_info(0.1)))


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_idempotent_calls_are_retried_only_on_unavailable(policy: RetryPolicy, code: grpc.StatusCode) -> None:
    assert policy.is_retryable(True, rpc_error(code)) is (code is grpc.StatusCode.UNAVAILABLE)


def test_resource_exhausted_is_retried_only_with_retry_info(policy: RetryPolicy) -> None:
    assert not policy.is_retryable(True, rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED))
    assert policy.is_retryable(True, rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_info(0.2)))


def test_open_breaker_and_other_exceptions_are_not_retried(policy: RetryPolicy) -> None:
    assert not policy.is_retryable(True, CircuitOpenError("risk:1", 1.0))
    assert not policy.is_retryable(True, RuntimeError("bug"))


def test_breaker_counts_only_signs_of_an_unwell_downstream() -> None:
    assert grpc.StatusCode.UNAVAILABLE in BREAKER_FAILURE_CODES
    assert grpc.StatusCode.DEADLINE_EXCEEDED in BREAKER_FAILURE_CODES
    assert grpc.StatusCode.INTERNAL in BREAKER_FAILURE_CODES
    for code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    ):
        assert code not in BREAKER_FAILURE_CODES


def _state_after_failure(policy: RetryPolicy, err: BaseException, attempt: int) -> RetryCallState:
    retrying = policy.retrying(True, budget_s=10.0)
    state = RetryCallState(retrying, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(err), err, None))
    return state


def test_backoff_grows_with_jitter_and_is_capped(policy: RetryPolicy) -> None:
    err = rpc_error(grpc.StatusCode.UNAVAILABLE)
    wait = policy.retrying(True, 10.0).wait
    first = [wait(_state_after_failure(policy, err, 1)) for _ in range(50)]
    third = [wait(_state_after_failure(policy, err, 3)) for _ in range(50)]
    assert all(0.01 <= d <= 0.02 for d in first)
    assert all(0.04 <= d <= 0.05 for d in third)
    assert len(set(first)) > 1  # jittered
    assert wait(_state_after_failure(policy, err, 20)) == 0.05


def test_backoff_waits_at_least_the_servers_retry_info(policy: RetryPolicy) -> None:
    err = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_info(0.3))
    assert policy.retrying(True, 10.0).wait(_state_after_failure(policy, err, 1)) == pytest.approx(0.3)


async def test_retrying_stops_after_max_attempts_and_reraises(policy: RetryPolicy) -> None:
    calls = 0

    async def always_unavailable() -> None:
        nonlocal calls
        calls += 1
        raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(grpc.aio.AioRpcError):
        await policy.retrying(True, budget_s=10.0)(always_unavailable)
    assert calls == 3


async def test_retrying_stops_when_the_budget_would_run_out(policy: RetryPolicy) -> None:
    calls = 0

    async def always_unavailable() -> None:
        nonlocal calls
        calls += 1
        raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(grpc.aio.AioRpcError):
        await policy.retrying(True, budget_s=0.005)(always_unavailable)
    assert calls == 1  # the first backoff (>= 10 ms) would not fit into 5 ms
    assert loop.time() - start < 0.05
