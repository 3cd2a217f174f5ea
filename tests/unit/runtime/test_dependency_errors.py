"""Which exceptions mean "a dependency is down" (UNAVAILABLE + RetryInfo) and
which stay bugs (None: the interceptor answers UNKNOWN)."""

from __future__ import annotations

import errno

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from runtime.errors import DEPENDENCY_DOMAIN, DEPENDENCY_RETRY_AFTER_S, dependency_unavailable, grpc_code


def _unpack(exc: BaseException) -> tuple[str, float]:
    st = dependency_unavailable(exc)
    assert st is not None, exc
    assert grpc_code(st.code) is grpc.StatusCode.UNAVAILABLE
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert st.details[0].Unpack(info) and st.details[1].Unpack(retry)
    assert info.domain == DEPENDENCY_DOMAIN
    assert info.metadata["error"] == type(exc).__name__ or exc.__cause__ is not None
    return info.reason, retry.retry_delay.ToNanoseconds() / 1e9


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
         "DATABASE_CONNECTION_LOST"),
        (asyncpg.InterfaceError("connection is closed"), "DATABASE_CONNECTION_LOST"),
        (asyncpg.InterfaceError("pool is closing"), "DATABASE_CONNECTION_LOST"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), "DATABASE_RESTARTING"),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"),
         "DATABASE_RESTARTING"),
        (asyncpg.CrashShutdownError("crash"), "DATABASE_RESTARTING"),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), "DATABASE_BUSY"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 5432)"),
         "DEPENDENCY_UNREACHABLE"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "DEPENDENCY_UNREACHABLE"),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0), "
                 "[Errno 111] Connect call failed ('127.0.0.1', 5432)"), "DEPENDENCY_UNREACHABLE"),
        (TimeoutError(), "DEPENDENCY_TIMEOUT"),  # pool.acquire(timeout=...) ran out
    ],
)  # fmt: skip
def test_outages_are_unavailable_with_retry_info(exc: BaseException, reason: str) -> None:
    assert _unpack(exc) == (reason, DEPENDENCY_RETRY_AFTER_S)


def test_the_message_is_generic_never_the_exception_text() -> None:
    st = dependency_unavailable(OSError("Multiple exceptions: Connect call failed ('10.1.2.3', 5432)"))
    assert st is not None and "10.1.2.3" not in st.message


def test_a_wrapped_outage_is_found_through_its_cause() -> None:
    try:
        try:
            raise asyncpg.ConnectionDoesNotExistError("gone")
        except asyncpg.ConnectionDoesNotExistError as inner:
            raise RuntimeError("store failed") from inner
    except RuntimeError as outer:
        assert _unpack(outer)[0] == "DATABASE_CONNECTION_LOST"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        KeyError("x"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedTableError("relation does not exist"),
        FileNotFoundError(errno.ENOENT, "no such file"),
        PermissionError(errno.EACCES, "denied"),
    ],
)
def test_bugs_and_bad_data_are_not_outages(exc: BaseException) -> None:
    assert dependency_unavailable(exc) is None
