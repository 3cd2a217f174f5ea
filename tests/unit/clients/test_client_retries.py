"""The client SDK's retries, on the wire of a fake edge: a mutating call keeps
one idempotency key across its attempts; reads are retried on UNAVAILABLE;
RESOURCE_EXHAUSTED waits for RetryInfo; nothing else is retried; the default
timeout bounds the whole call; streams reopen only before their first message."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import trading_client
from google.rpc import error_details_pb2
from trading.execution.v1 import execution_service_pb2 as ex
from trading.marketdata.v1 import marketdata_service_pb2 as md
from trading_client import AsyncTradingClient, RetryPolicy, TradingClient, idempotency_key, replayed

from tests.support.client_edge import Edge, Failure, retry_info

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05, max_retry_after=1.0)
UNAVAILABLE = Failure(grpc.StatusCode.UNAVAILABLE, "edge restarting")


def place() -> ex.PlaceOrderRequest:
    return ex.PlaceOrderRequest(client_order_id="c-1", symbol="BTC-USD")


def client(edge: Edge, **kwargs: object) -> AsyncTradingClient:
    return AsyncTradingClient(edge.target, ca_file=edge.ca_file, api_key="key-1", retry=FAST, **kwargs)  # type: ignore[arg-type]


async def test_a_mutating_call_keeps_its_idempotency_key_across_retries(edge: Edge) -> None:
    edge.script.failures["PlaceOrder"] = [UNAVAILABLE, UNAVAILABLE]
    async with client(edge) as c:
        call = c.execution.PlaceOrder(place())
        reply = await call
        assert not replayed(await call.initial_metadata())
        again = await c.execution.PlaceOrder(place())
    attempts = edge.script.calls("PlaceOrder")
    assert len(attempts) == 4
    keys = [a.metadata.get("idempotency-key") for a in attempts]
    assert keys[0] and keys[0] == keys[1] == keys[2], keys  # one call, three attempts, one key
    assert keys[3] and keys[3] != keys[0]  # the next call has a key of its own
    assert reply.order.order_id == "order-1" and again.order.order_id == "order-2"
    assert all(a.metadata.get("x-api-key") == "key-1" for a in attempts)


async def test_a_key_of_the_callers_is_kept_and_a_repeat_is_replayed(edge: Edge) -> None:
    async with client(edge) as c:
        first = await c.execution.PlaceOrder(place(), metadata=idempotency_key("order-c-1"))
        call = c.execution.PlaceOrder(place(), metadata=idempotency_key("order-c-1"))
        second = await call
        assert replayed(await call.initial_metadata())
    assert [a.metadata["idempotency-key"] for a in edge.script.calls("PlaceOrder")] == ["order-c-1"] * 2
    assert first.order.order_id == second.order.order_id


async def test_reads_are_retried_on_unavailable_without_a_key(edge: Edge) -> None:
    edge.script.failures["GetOrder"] = [UNAVAILABLE]
    async with client(edge) as c:
        reply = await c.execution.GetOrder(ex.GetOrderRequest(order_id="o-7"))
    assert reply.order.order_id == "o-7"
    attempts = edge.script.calls("GetOrder")
    assert len(attempts) == 2 and all("idempotency-key" not in a.metadata for a in attempts)


async def test_attempts_are_bounded(edge: Edge) -> None:
    edge.script.failures["GetQuote"] = [UNAVAILABLE] * 10
    async with client(edge) as c:
        with pytest.raises(trading_client.Unavailable):
            await c.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"))
    assert len(edge.script.calls("GetQuote")) == FAST.max_attempts


@pytest.mark.parametrize(
    "failure",
    [
        Failure(
            grpc.StatusCode.FAILED_PRECONDITION, "halted", (error_details_pb2.ErrorInfo(reason="HALTED"),)
        ),
        Failure(grpc.StatusCode.INVALID_ARGUMENT),
        Failure(grpc.StatusCode.INTERNAL),
        Failure(grpc.StatusCode.DEADLINE_EXCEEDED),
        Failure(grpc.StatusCode.ABORTED),
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota, no hint"),
    ],
    ids=lambda f: f.code.name,
)
async def test_other_failures_are_final(edge: Edge, failure: Failure) -> None:
    edge.script.failures["PlaceOrder"] = [failure]
    async with client(edge) as c:
        with pytest.raises(trading_client.ERROR_CLASSES[failure.code]):
            await c.execution.PlaceOrder(place())
    assert len(edge.script.calls("PlaceOrder")) == 1


async def test_resource_exhausted_waits_for_retry_info(edge: Edge) -> None:
    edge.script.failures["PlaceOrder"] = [
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited", (retry_info(0.3),))
    ]
    async with client(edge) as c:
        start = time.monotonic()
        await c.execution.PlaceOrder(place())
        waited = time.monotonic() - start
    attempts = edge.script.calls("PlaceOrder")
    assert (
        len(attempts) == 2
        and attempts[0].metadata["idempotency-key"] == attempts[1].metadata["idempotency-key"]
    )
    assert 0.3 <= waited < 2.0


async def test_a_retry_info_longer_than_the_policy_allows_is_the_callers_to_honour(edge: Edge) -> None:
    edge.script.failures["GetQuote"] = [
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "later", (retry_info(30),))
    ]
    async with client(edge) as c:
        with pytest.raises(trading_client.ResourceExhausted) as caught:
            await c.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"))
    assert caught.value.retry_after == 30 and len(edge.script.calls("GetQuote")) == 1


async def test_the_default_timeout_bounds_the_call_and_its_retries(edge: Edge) -> None:
    # Backoff that outlasts the timeout: the call fails instead of sleeping past its deadline.
    slow = RetryPolicy(max_attempts=10, initial_backoff=0.4, max_backoff=0.4)
    edge.script.failures["GetQuote"] = [UNAVAILABLE] * 10
    async with AsyncTradingClient(
        edge.target, ca_file=edge.ca_file, api_key="k", retry=slow, timeout=1.0
    ) as c:
        start = time.monotonic()
        with pytest.raises(trading_client.Unavailable):
            await c.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"))
        assert time.monotonic() - start < 1.0
        attempts = len(edge.script.calls("GetQuote"))
        edge.script.failures["GetQuote"].clear()
        await c.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"), timeout=5)
    assert 1 < attempts <= 3  # 0.4 s apart within 1 s
    seen = edge.script.calls("GetQuote")
    first = seen[0].time_remaining
    assert first is not None and 0.5 < first <= 1.1  # the client's default (+ the wire's rounding)
    last = seen[-1].time_remaining
    assert last is not None and 4 < last <= 5.1  # the call's own


async def test_streams_are_iterated_with_typed_errors(edge: Edge) -> None:
    edge.script.stream_failure = Failure(
        grpc.StatusCode.PERMISSION_DENIED, "scope", (error_details_pb2.ErrorInfo(reason="MISSING_SCOPE"),)
    )
    got = []
    async with client(edge) as c:
        stream = c.execution.StreamOrderUpdates(ex.StreamOrderUpdatesRequest())
        with pytest.raises(trading_client.PermissionDenied) as caught:
            async for update in stream:
                got.append(update.stream_sequence)
    assert got == [1, 2, 3] and caught.value.reason == "MISSING_SCOPE"
    seen = edge.script.calls("StreamOrderUpdates")
    assert len(seen) == 1 and seen[0].time_remaining is None  # no default deadline on streams


async def test_a_stream_is_reopened_only_before_its_first_message(edge: Edge) -> None:
    edge.script.failures["StreamOrderUpdates"] = [UNAVAILABLE]
    edge.script.stream_failure = UNAVAILABLE
    got = []
    async with client(edge) as c:
        with pytest.raises(trading_client.Unavailable):
            async for update in c.execution.StreamOrderUpdates(ex.StreamOrderUpdatesRequest()):
                got.append(update.stream_sequence)
    # Opened twice (the first failed before any message), never after messages arrived.
    assert len(edge.script.calls("StreamOrderUpdates")) == 2
    assert got == [1, 2, 3]


async def test_the_sync_client_retries_with_one_key_and_maps_stream_errors(edge: Edge) -> None:
    edge.script.failures["PlaceOrder"] = [UNAVAILABLE]
    edge.script.stream_failure = Failure(grpc.StatusCode.NOT_FOUND, "gone")

    def calls() -> tuple[str, bool, list[int], trading_client.TradingError | None]:
        with TradingClient(edge.target, ca_file=edge.ca_file, api_key="k", retry=FAST) as c:
            reply, _ = c.execution.PlaceOrder.with_call(place(), metadata=idempotency_key("sync-1"))
            _, again = c.execution.PlaceOrder.with_call(place(), metadata=idempotency_key("sync-1"))
            got: list[int] = []
            try:
                for update in c.execution.StreamOrderUpdates(ex.StreamOrderUpdatesRequest()):
                    got.append(update.stream_sequence)
            except trading_client.TradingError as exc:
                return reply.order.order_id, replayed(again.initial_metadata()), got, exc
            return reply.order.order_id, replayed(again.initial_metadata()), got, None

    order_id, was_replayed, got, error = await asyncio.to_thread(calls)
    assert order_id == "order-1" and was_replayed
    assert [a.metadata["idempotency-key"] for a in edge.script.calls("PlaceOrder")] == ["sync-1"] * 3
    assert got == [1, 2, 3] and isinstance(error, trading_client.NotFound)


async def test_the_sync_client_adds_its_own_key_once_per_call(edge: Edge) -> None:
    edge.script.failures["PlaceOrder"] = [UNAVAILABLE, UNAVAILABLE]

    def call() -> None:
        with TradingClient(edge.target, ca_file=edge.ca_file, api_key="k", retry=FAST) as c:
            c.execution.PlaceOrder(place())

    await asyncio.to_thread(call)
    keys = {a.metadata.get("idempotency-key") for a in edge.script.calls("PlaceOrder")}
    assert len(edge.script.calls("PlaceOrder")) == 3 and len(keys) == 1 and None not in keys


async def test_public_mutating_calls_carry_no_key_and_are_sent_once(edge: Edge) -> None:
    # Login and RefreshToken are post (mutating) but public: the edge refuses a
    # key without a caller to scope it to, and a repeated RefreshToken would
    # present a consumed token. So: no key, no repeat.
    edge.script.failures["Login"] = [UNAVAILABLE]
    login = ("acme", "trader@acme.test", "right")
    async with AsyncTradingClient(edge.target, ca_file=edge.ca_file, login=login, retry=FAST) as c:
        with pytest.raises(trading_client.Unavailable):
            await c.authenticate()
        assert len(edge.script.calls("Login")) == 1
        await c.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"))
    for seen in edge.script.calls("Login"):
        assert "idempotency-key" not in seen.metadata
    assert len(edge.script.calls("Login")) == 2
