"""The identity port suites on the in-memory adapters."""

from __future__ import annotations

import pytest

from services.identity.adapters.memory import (
    MemoryApiKeyCache,
    MemoryIdentityStore,
    MemoryLoginFailures,
    MemorySigningKeyStore,
)
from tests.suites.identity_ports import (
    ApiKeyCacheSuite,
    IdentityStoreSuite,
    LoginFailuresSuite,
    SigningKeyStoreSuite,
)


class TestMemoryIdentityStore(IdentityStoreSuite):
    @pytest.fixture
    def store(self) -> MemoryIdentityStore:
        return MemoryIdentityStore()


class TestMemorySigningKeyStore(SigningKeyStoreSuite):
    @pytest.fixture
    def keys(self) -> MemorySigningKeyStore:
        return MemorySigningKeyStore()


class TestMemoryLoginFailures(LoginFailuresSuite):
    @pytest.fixture
    def failures(self) -> MemoryLoginFailures:
        return MemoryLoginFailures()


class TestMemoryApiKeyCache(ApiKeyCacheSuite):
    @pytest.fixture
    def cache(self) -> MemoryApiKeyCache:
        return MemoryApiKeyCache()
