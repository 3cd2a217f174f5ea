"""The client SDK's one table from gRPC status code to typed error, and the
errors built from google.rpc details, on the wire (sync and asyncio)."""

from __future__ import annotations

import asyncio
import pickle

import grpc
import grpc.aio
import pytest
import trading_client
from google.rpc import error_details_pb2
from trading.marketdata.v1 import marketdata_service_pb2 as md
from trading_client import (
    ERROR_CLASSES,
    AsyncTradingClient,
    FieldViolation,
    RetryPolicy,
    TradingClient,
    TradingError,
)
from trading_client.errors import error_class, from_rpc_error

from tests.support.client_edge import Edge, Failure, retry_info

ERROR_CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
NO_RETRIES = RetryPolicy(max_attempts=1)


def test_the_table_covers_every_error_code_with_its_own_class() -> None:
    assert set(ERROR_CLASSES) == set(ERROR_CODES)
    assert grpc.StatusCode.OK not in ERROR_CLASSES
    classes = list(ERROR_CLASSES.values())
    assert len(set(classes)) == len(classes)
    for code, cls in ERROR_CLASSES.items():
        assert issubclass(cls, TradingError) and cls is not TradingError
        assert cls.CODE is code
        assert error_class(code) is cls
        # Named as the code in CamelCase, exported from the package.
        assert cls.__name__.lower() == code.name.replace("_", "").lower()
        assert getattr(trading_client, cls.__name__) is cls
    assert error_class(grpc.StatusCode.OK) is TradingError


def test_the_classes_the_contract_documents_exist() -> None:
    for name in (
        "NotFound",
        "PermissionDenied",
        "Unauthenticated",
        "InvalidArgument",
        "FailedPrecondition",
        "ResourceExhausted",
        "Unavailable",
        "AlreadyExists",
        "Aborted",
        "DeadlineExceeded",
    ):
        assert issubclass(getattr(trading_client, name), TradingError)


def _rich(code: grpc.StatusCode, message: str, *details: object) -> grpc.aio.AioRpcError:
    failure = Failure(code, message, tuple(details))  # type: ignore[arg-type]
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*failure.trailing_metadata(), ("x-correlation-id", "corr-9")),
        details=message,
    )


def test_details_become_fields() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="RISK_MAX_NOTIONAL_EXCEEDED", domain="trading.risk", metadata={"limit": "100000"}
    )
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(
        field="quantity", description="must be greater than zero", reason="decimal.positive"
    )
    err = from_rpc_error(_rich(grpc.StatusCode.FAILED_PRECONDITION, "refused", info, bad, retry_info(1.5)))
    assert type(err) is trading_client.FailedPrecondition
    assert (err.code, err.message, err.reason, err.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "refused",
        "RISK_MAX_NOTIONAL_EXCEEDED",
        "trading.risk",
    )
    assert dict(err.metadata) == {"limit": "100000"}
    assert err.field_violations == (
        FieldViolation("quantity", "must be greater than zero", "decimal.positive"),
    )
    assert err.retry_after == 1.5
    assert err.correlation_id == "corr-9"
    assert len(err.details) == 3
    assert "RISK_MAX_NOTIONAL_EXCEEDED" in str(err) and "quantity" in str(err)


def test_an_error_without_details_has_empty_fields() -> None:
    err = from_rpc_error(
        grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")
    )
    assert type(err) is trading_client.Unavailable
    assert (err.message, err.reason, err.domain, err.retry_after) == ("down", "", "", None)
    assert err.field_violations == () and dict(err.metadata) == {} and err.correlation_id is None


def test_details_inconsistent_with_the_status_are_ignored() -> None:
    # grpc_status refuses a google.rpc.Status whose code differs from the call's.
    err = _rich(grpc.StatusCode.NOT_FOUND, "gone", error_details_pb2.ErrorInfo(reason="X"))
    forged = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), err.trailing_metadata(), details="gone"
    )
    mapped = from_rpc_error(forged)
    assert type(mapped) is trading_client.Internal and mapped.reason == ""


def test_errors_survive_pickling() -> None:
    err = trading_client.NotFound(
        grpc.StatusCode.NOT_FOUND, "no such order", "ORDER_NOT_FOUND", "trading.execution", {"a": "b"}
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is trading_client.NotFound
    assert (back.code, back.message, back.reason, back.domain, dict(back.metadata)) == (
        grpc.StatusCode.NOT_FOUND,
        "no such order",
        "ORDER_NOT_FOUND",
        "trading.execution",
        {"a": "b"},
    )


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda c: c.name)
async def test_every_status_on_the_wire_raises_its_class(edge: Edge, code: grpc.StatusCode) -> None:
    info = error_details_pb2.ErrorInfo(reason=f"R_{code.name}", domain="test")
    edge.script.failures["GetQuote"] = [Failure(code, f"scripted {code.name}", (info,))]
    async with AsyncTradingClient(edge.target, ca_file=edge.ca_file, api_key="k", retry=NO_RETRIES) as client:
        with pytest.raises(TradingError) as caught:
            await client.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"))
    assert type(caught.value) is ERROR_CLASSES[code]
    assert caught.value.reason == f"R_{code.name}" and caught.value.message == f"scripted {code.name}"
    assert isinstance(caught.value.__cause__, grpc.RpcError)


async def test_the_sync_client_raises_typed_errors_too(edge: Edge) -> None:
    edge.script.failures["GetQuote"] = [
        Failure(grpc.StatusCode.NOT_FOUND, "no quote", (error_details_pb2.ErrorInfo(reason="NO_QUOTE"),))
    ]

    # In a thread: the fake edge runs on this test's event loop.
    def calls() -> tuple[TradingError | None, str]:
        with TradingClient(edge.target, ca_file=edge.ca_file, api_key="k") as client:
            try:
                client.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"))
            except TradingError as exc:
                error: TradingError | None = exc
            else:
                error = None
            # ...and it answers normally afterwards.
            return error, client.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD")).quote.symbol

    error, symbol = await asyncio.to_thread(calls)
    assert type(error) is trading_client.NotFound and error.reason == "NO_QUOTE"
    assert symbol == "BTC-USD"
