"""Fixtures of the client SDK's unit tests: the fake edge of
tests.support.client_edge on a spare loopback port, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from runtime.security.pki import create_ca, issue_certificate
from tests.support.client_edge import Edge, serve_edge


@pytest.fixture(scope="session")
def edge_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, Path]:
    """Key, certificate (SAN 127.0.0.1) and CA file of the test edge."""
    pki = tmp_path_factory.mktemp("client-pki")
    paths = issue_certificate(pki, "gateway", trust_domain="test.local", ca=create_ca(pki))
    return paths.key.read_bytes(), paths.cert.read_bytes(), paths.ca


@pytest_asyncio.fixture
async def edge(edge_pki: tuple[bytes, bytes, Path]) -> AsyncIterator[Edge]:
    async with serve_edge(*edge_pki) as running:
        yield running
