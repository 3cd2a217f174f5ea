"""The TypeScript SDK (clients/typescript-sdk: messages and service
descriptors generated from proto/ by protoc-gen-es, typed Connect clients)
runs its end-to-end test against the public gRPC edge of the running
platform: login and automatic token refresh, a quote, a market order placed
once per idempotency key and streamed until FILLED, the portfolio, typed
errors (field violations, UNAUTHENTICATED), another tenant refused the order
and served by its own API key.

The toolchain is pinned in clients/typescript-sdk/package-lock.json (installed
with `npm ci` when missing); node and npm come with the machine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.edge import edge_ca_file, edge_target
from tests.contract.conftest import RunningPlatform, create_tenant

SDK = Path(__file__).resolve().parents[2] / "clients" / "typescript-sdk"


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["npm", *args], cwd=SDK, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def sdk() -> Path:
    """clients/typescript-sdk with its toolchain installed."""
    assert shutil.which("npm") and shutil.which("node"), "node and npm are needed (see infrastructure notes)"
    if not (SDK / "node_modules" / ".bin" / "tsc").exists():
        installed = _npm("ci", "--no-audit", "--no-fund")
        assert installed.returncode == 0, installed.stderr[-3000:]
    return SDK


@pytest.mark.integration
async def test_the_typescript_sdk_runs_against_the_grpc_edge(sdk: Path, platform: RunningPlatform) -> None:
    # The trader has a tenant of its own: the demo tenant's limits and trading
    # state are whatever earlier contract tests left (the every-RPC walk sets
    # them). A second tenant's administrator (who also trades) must not see the
    # trader's order, and has no positions for its API key to show.
    trader = await create_tenant(platform, "ts-sdk")
    other = await create_tenant(platform, "ts-sdk-other")
    env = {
        **os.environ,
        "TRADING_EDGE_URL": f"https://{edge_target(platform.settings)}",
        "TRADING_EDGE_CA": str(edge_ca_file(platform.settings)),
        "TRADING_TRADER_TENANT": trader.slug,
        "TRADING_TRADER_EMAIL": trader.email,
        "TRADING_TRADER_PASSWORD": trader.password,
        "TRADING_OTHER_TENANT": other.slug,
        "TRADING_OTHER_EMAIL": other.email,
        "TRADING_OTHER_PASSWORD": other.password,
    }
    # `npm test`: tsc (strict) first, then node's test runner over the build.
    proc = await asyncio.create_subprocess_exec(
        "npm",
        "test",
        cwd=sdk,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 300)
    out, err = out_b.decode(), err_b.decode()
    print(out[-4000:])  # the test runner's summary, shown with -s or on failure
    assert proc.returncode == 0, out[-6000:] + err[-3000:]
    # The end-to-end suite is skipped without TRADING_EDGE_URL: it must have run.
    assert "# SKIP" not in out and "# fail 0" in out, out[-3000:]
