"""Credentials of a client: an API key, or a login whose access token is
renewed before it expires.

A login keeps the token pair of IdentityService.Login. Shortly before the
access token expires (``refresh_before`` seconds, at most half its lifetime)
the next call first exchanges the refresh token with RefreshToken (rotation:
the new pair replaces the old one); when that fails (refresh token expired or
revoked) it logs in again. Concurrent calls share one renewal."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from trading.identity.v1 import identity_service_pb2

from trading_client.errors import TradingError
from trading_client.methods import MethodInfo

AUTHORIZATION_KEY = "authorization"
API_KEY_KEY = "x-api-key"

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key of the tenant (``x-api-key``)."""

    key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PasswordLogin:
    """A user's login: tenant slug, e-mail and password."""

    tenant_slug: str
    email: str
    password: str = field(repr=False)

    def request(self) -> identity_service_pb2.LoginRequest:
        return identity_service_pb2.LoginRequest(
            tenant_slug=self.tenant_slug, email=self.email, password=self.password
        )


Credential = ApiKey | PasswordLogin


def credential_from(api_key: str | None, login: tuple[str, str, str] | None) -> Credential | None:
    """The credential of the client constructors' ``api_key=``/``login=`` (None: anonymous)."""
    if api_key is not None and login is not None:
        raise ValueError("pass either api_key= or login=, not both")
    if api_key is not None:
        if not api_key:
            raise ValueError("api_key is empty")
        return ApiKey(api_key)
    if login is not None:
        tenant_slug, email, password = login
        return PasswordLogin(tenant_slug, email, password)
    return None


@dataclass(frozen=True, slots=True)
class TokenPair:
    """The tokens of one Login or RefreshToken reply, with when to renew them (``clock`` time)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    renew_at: float
    refresh_expires_at: float

    @classmethod
    def from_reply(
        cls, tokens: identity_service_pb2.AuthTokens, *, now: float, refresh_before: float
    ) -> TokenPair:
        expires = tokens.access_token_expires_at
        if tokens.HasField("access_token_expires_at"):
            expires_at = expires.seconds + expires.nanos / 1e9
            lifetime = max(0.0, expires_at - now)
            renew_at = expires_at - min(refresh_before, lifetime / 2)
        else:  # no expiry given: renewed only when the server refuses it
            renew_at = math.inf
        refresh = tokens.refresh_token_expires_at
        refresh_expires_at = (
            refresh.seconds + refresh.nanos / 1e9 if tokens.HasField("refresh_token_expires_at") else math.inf
        )
        return cls(tokens.access_token, tokens.refresh_token, renew_at, refresh_expires_at)


class _TokenState:
    """The token pair and the decisions about it (shared by the sync and async sources)."""

    def __init__(self, clock: Callable[[], float], refresh_before: float) -> None:
        self.clock = clock
        self.refresh_before = refresh_before
        self.pair: TokenPair | None = None

    def usable(self) -> str | None:
        pair = self.pair
        return pair.access_token if pair is not None and self.clock() < pair.renew_at else None

    def refresh_token(self) -> str | None:
        pair = self.pair
        if pair is None or not pair.refresh_token or self.clock() >= pair.refresh_expires_at:
            return None
        return pair.refresh_token

    def store(self, tokens: identity_service_pb2.AuthTokens) -> str:
        self.pair = TokenPair.from_reply(tokens, now=self.clock(), refresh_before=self.refresh_before)
        return self.pair.access_token

    def invalidate(self, access_token: str) -> None:
        """The server refused ``access_token``: renew it before the next call."""
        pair = self.pair
        if pair is not None and pair.access_token == access_token:
            self.pair = TokenPair(pair.access_token, pair.refresh_token, -math.inf, pair.refresh_expires_at)


LoginCall = Callable[[identity_service_pb2.LoginRequest], Awaitable[identity_service_pb2.LoginResponse]]
RefreshCall = Callable[
    [identity_service_pb2.RefreshTokenRequest], Awaitable[identity_service_pb2.RefreshTokenResponse]
]
SyncLoginCall = Callable[[identity_service_pb2.LoginRequest], identity_service_pb2.LoginResponse]
SyncRefreshCall = Callable[
    [identity_service_pb2.RefreshTokenRequest], identity_service_pb2.RefreshTokenResponse
]


class AsyncTokenSource:
    """Access tokens of a login for asyncio clients."""

    def __init__(
        self,
        login: PasswordLogin,
        call_login: LoginCall,
        call_refresh: RefreshCall,
        *,
        refresh_before: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._login = login
        self._call_login = call_login
        self._call_refresh = call_refresh
        self._state = _TokenState(clock, refresh_before)
        self._lock = asyncio.Lock()

    @property
    def tokens(self) -> TokenPair | None:
        return self._state.pair

    async def access_token(self) -> str:
        token = self._state.usable()
        if token is not None:
            return token
        async with self._lock:
            token = self._state.usable()  # another call renewed it meanwhile
            if token is not None:
                return token
            refresh = self._state.refresh_token()
            if refresh is not None:
                try:
                    reply = await self._call_refresh(
                        identity_service_pb2.RefreshTokenRequest(refresh_token=refresh)
                    )
                    return self._state.store(reply.tokens)
                except TradingError:
                    pass  # expired, revoked or reused: log in again
            login = await self._call_login(self._login.request())
            return self._state.store(login.tokens)

    def invalidate(self, access_token: str) -> None:
        self._state.invalidate(access_token)


class TokenSource:
    """Access tokens of a login for synchronous clients (thread-safe)."""

    def __init__(
        self,
        login: PasswordLogin,
        call_login: SyncLoginCall,
        call_refresh: SyncRefreshCall,
        *,
        refresh_before: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._login = login
        self._call_login = call_login
        self._call_refresh = call_refresh
        self._state = _TokenState(clock, refresh_before)
        self._lock = threading.Lock()

    @property
    def tokens(self) -> TokenPair | None:
        return self._state.pair

    def access_token(self) -> str:
        token = self._state.usable()
        if token is not None:
            return token
        with self._lock:
            token = self._state.usable()
            if token is not None:
                return token
            refresh = self._state.refresh_token()
            if refresh is not None:
                try:
                    reply = self._call_refresh(
                        identity_service_pb2.RefreshTokenRequest(refresh_token=refresh)
                    )
                    return self._state.store(reply.tokens)
                except TradingError:
                    pass
            return self._state.store(self._call_login(self._login.request()).tokens)

    def invalidate(self, access_token: str) -> None:
        self._state.invalidate(access_token)


def has_credential(metadata: Metadata) -> bool:
    """Did the caller put a credential on this call itself?"""
    return any(key in (AUTHORIZATION_KEY, API_KEY_KEY) for key, _ in metadata)


def bearer_token(sent: Metadata) -> str | None:
    """The access token a call was sent with (None: not a bearer token)."""
    for key, value in sent:
        if key == AUTHORIZATION_KEY and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return None


def bearer(token: str) -> Metadata:
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


def needs_credential(info: MethodInfo, metadata: Metadata) -> bool:
    return not info.public and not has_credential(metadata)
