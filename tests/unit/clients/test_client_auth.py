"""The client SDK's credentials on the wire of a fake edge: the login's access
token is renewed with RefreshToken shortly before it expires (a hand-moved
clock), a login again when the refresh fails; an API key is sent as is;
public RPCs carry no credential."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest
import trading_client
from trading.identity.v1 import identity_service_pb2 as idn
from trading.marketdata.v1 import marketdata_service_pb2 as md
from trading_client import AsyncTradingClient, TradingClient
from trading_client.auth import TokenPair

from tests.support.client_edge import Edge, Failure

QUOTE = md.GetQuoteRequest(symbol="BTC-USD")
LOGIN = ("acme", "trader@acme.test", "right")


def login_client(edge: Edge, **kwargs: object) -> AsyncTradingClient:
    return AsyncTradingClient(
        edge.target,
        ca_file=edge.ca_file,
        login=LOGIN,
        clock=edge.clock,
        refresh_before=60,
        **kwargs,  # type: ignore[arg-type]
    )


def bearers(edge: Edge) -> list[str | None]:
    return [s.metadata.get("authorization") for s in edge.script.calls("GetQuote")]


async def test_the_token_is_refreshed_shortly_before_it_expires(edge: Edge) -> None:
    # Lifetime 300 s, refresh_before 60 s: renewed from 240 s on.
    async with login_client(edge) as c:
        await c.marketdata.GetQuote(QUOTE)
        assert len(edge.script.calls("Login")) == 1
        edge.clock.now += 239
        await c.marketdata.GetQuote(QUOTE)
        assert edge.script.calls("RefreshToken") == []
        edge.clock.now += 2
        await c.marketdata.GetQuote(QUOTE)
        refreshes = edge.script.calls("RefreshToken")
        assert len(refreshes) == 1 and refreshes[0].request.refresh_token == "refresh-token-00000001"
        # The new pair replaced the old one: the next renewal uses its refresh token.
        edge.clock.now += 241
        await c.marketdata.GetQuote(QUOTE)
    assert bearers(edge) == ["Bearer access-1", "Bearer access-1", "Bearer access-2", "Bearer access-3"]
    assert edge.script.calls("RefreshToken")[1].request.refresh_token == "refresh-token-00000002"
    assert len(edge.script.calls("Login")) == 1
    # Login and RefreshToken are public: no credential, so no idempotency key either.
    for seen in edge.script.calls("Login") + edge.script.calls("RefreshToken"):
        assert not {"authorization", "x-api-key", "idempotency-key"} & set(seen.metadata)


async def test_a_short_lived_token_is_renewed_at_half_its_life(edge: Edge) -> None:
    edge.script.access_lifetime = 30  # refresh_before (60 s) is more than its whole life
    async with login_client(edge) as c:
        await c.authenticate()
        pair = c.tokens.tokens if c.tokens else None
        assert pair is not None and pair.renew_at == pytest.approx(edge.clock.now + 15)
        edge.clock.now += 16
        await c.marketdata.GetQuote(QUOTE)
    assert len(edge.script.calls("RefreshToken")) == 1


async def test_a_failed_refresh_logs_in_again(edge: Edge) -> None:
    edge.script.refresh_refused = True
    async with login_client(edge) as c:
        await c.marketdata.GetQuote(QUOTE)
        edge.clock.now += 250
        await c.marketdata.GetQuote(QUOTE)
    assert len(edge.script.calls("RefreshToken")) == 1
    assert len(edge.script.calls("Login")) == 2
    assert bearers(edge) == ["Bearer access-1", "Bearer access-2"]


async def test_wrong_credentials_raise_unauthenticated(edge: Edge) -> None:
    async with AsyncTradingClient(edge.target, ca_file=edge.ca_file, login=("acme", "a@b.c", "wrong")) as c:
        with pytest.raises(trading_client.Unauthenticated):
            await c.authenticate()
        with pytest.raises(trading_client.Unauthenticated):
            await c.marketdata.GetQuote(QUOTE)
    assert edge.script.calls("GetQuote") == []


async def test_concurrent_calls_share_one_renewal(edge: Edge) -> None:
    async with login_client(edge) as c:
        await asyncio.gather(*(c.marketdata.GetQuote(QUOTE) for _ in range(8)))
        edge.clock.now += 250
        await asyncio.gather(*(c.marketdata.GetQuote(QUOTE) for _ in range(8)))
    assert len(edge.script.calls("Login")) == 1 and len(edge.script.calls("RefreshToken")) == 1
    assert set(bearers(edge)) == {"Bearer access-1", "Bearer access-2"}


async def test_a_refused_token_is_renewed_once_and_the_call_repeated(edge: Edge) -> None:
    refused = Failure(grpc.StatusCode.UNAUTHENTICATED, "token revoked")
    edge.script.failures["GetQuote"] = [refused]
    async with login_client(edge) as c:
        await c.marketdata.GetQuote(QUOTE)
        assert bearers(edge) == ["Bearer access-1", "Bearer access-2"]
        # Refused again after the renewal: the caller gets it.
        edge.script.failures["GetQuote"] = [refused, refused]
        with pytest.raises(trading_client.Unauthenticated):
            await c.marketdata.GetQuote(QUOTE)
    assert len(edge.script.calls("GetQuote")) == 4


async def test_an_api_key_is_sent_as_is_and_never_renewed(edge: Edge) -> None:
    edge.script.failures["GetQuote"] = [Failure(grpc.StatusCode.UNAUTHENTICATED, "unknown key")]
    async with AsyncTradingClient(edge.target, ca_file=edge.ca_file, api_key="sk-live-1") as c:
        assert c.tokens is None
        with pytest.raises(trading_client.Unauthenticated):
            await c.marketdata.GetQuote(QUOTE)
        await c.marketdata.GetQuote(QUOTE)
    assert [s.metadata.get("x-api-key") for s in edge.script.calls("GetQuote")] == ["sk-live-1"] * 2
    assert edge.script.calls("Login") == []


async def test_an_anonymous_client_sends_no_credential_and_the_callers_own_wins(edge: Edge) -> None:
    async with AsyncTradingClient(edge.target, root_certificates=edge.ca_file.read_bytes()) as c:
        await c.marketdata.GetQuote(QUOTE)
        reply = await c.identity.Login(idn.LoginRequest(tenant_slug="acme", email="a@b.c", password="right"))
    async with AsyncTradingClient(edge.target, ca_file=edge.ca_file, api_key="sk-1") as c:
        await c.marketdata.GetQuote(QUOTE, metadata=(("authorization", "Bearer mine"),))
    first, second = edge.script.calls("GetQuote")
    assert "authorization" not in first.metadata and "x-api-key" not in first.metadata
    assert second.metadata.get("authorization") == "Bearer mine" and "x-api-key" not in second.metadata
    assert reply.tokens.access_token == "access-1"


async def test_the_sync_client_refreshes_too(edge: Edge) -> None:
    def calls() -> None:
        with TradingClient(edge.target, ca_file=edge.ca_file, login=LOGIN, clock=edge.clock) as c:
            c.marketdata.GetQuote(QUOTE)
            edge.clock.now += 241
            c.marketdata.GetQuote(QUOTE)

    await asyncio.to_thread(calls)
    assert bearers(edge) == ["Bearer access-1", "Bearer access-2"]
    assert len(edge.script.calls("Login")) == 1 and len(edge.script.calls("RefreshToken")) == 1


def test_constructor_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="api_key= or login="):
        TradingClient("127.0.0.1:1", api_key="k", login=LOGIN)
    with pytest.raises(ValueError, match="root_certificates= or ca_file="):
        TradingClient("127.0.0.1:1", root_certificates=b"x", ca_file="ca.crt")
    with pytest.raises(ValueError):
        trading_client.RetryPolicy(max_attempts=0)


def test_a_pair_without_expiry_is_renewed_only_when_refused() -> None:
    tokens = idn.AuthTokens(access_token="secret-a", refresh_token="secret-r")
    pair = TokenPair.from_reply(tokens, now=0, refresh_before=60)
    assert pair.renew_at == math.inf and pair.refresh_expires_at == math.inf
    assert "secret" not in repr(pair)  # tokens stay out of logs
