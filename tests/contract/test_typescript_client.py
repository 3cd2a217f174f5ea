"""A TypeScript client generated from the gateway's OpenAPI document by
openapi-typescript: a small order flow (clients/typescript/src/order_flow.ts)
type-checks with the document's required fields, enums and closed objects
enforced (lines that break them must be type errors), and then runs against
the running gateway.

The toolchain is pinned in clients/typescript/package-lock.json (installed
with `npm ci` when missing); node and npm come with the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from gateway.openapi import build_openapi
from gateway.routes import build_routes
from tests.contract.conftest import RunningPlatform, create_tenant

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "typescript"


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npm", *args], cwd=CLIENT, capture_output=True, text=True, timeout=300, check=False
    )


def _npx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npx", "--no-install", *args], cwd=CLIENT, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def generated_client() -> Path:
    """clients/typescript with its toolchain installed and the types generated
    from the document the gateway serves (built from the same routes)."""
    assert shutil.which("npm") and shutil.which("node"), "node and npm are needed (see infrastructure notes)"
    if not (CLIENT / "node_modules" / ".bin" / "openapi-typescript").exists():
        installed = _npm("ci", "--no-audit", "--no-fund")
        assert installed.returncode == 0, installed.stderr[-3000:]
    document = CLIENT / "build" / "openapi.json"
    document.parent.mkdir(exist_ok=True)
    document.write_text(json.dumps(build_openapi(build_routes(), title="trading", version="test")))
    (CLIENT / "src" / "generated").mkdir(exist_ok=True)
    generated = _npx("openapi-typescript", str(document), "-o", "src/generated/schema.d.ts")
    assert generated.returncode == 0, generated.stdout[-3000:] + generated.stderr[-3000:]
    return CLIENT


def test_the_generated_types_enforce_what_the_server_requires(generated_client: Path) -> None:
    # tsc fails on a type error, and on a @ts-expect-error line that is not one:
    # so a missing required field, a refused enum value, an unknown member or
    # a body member the path binds must each be a type error.
    checked = _npx("tsc", "-p", ".")
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    flow = (generated_client / "src" / "order_flow.ts").read_text()
    assert flow.count("@ts-expect-error") >= 5


@pytest.mark.integration
async def test_the_typescript_order_flow_runs_against_the_gateway(
    generated_client: Path, platform: RunningPlatform
) -> None:
    # A tenant of its own: default limits, whatever earlier tests set elsewhere.
    tenant = await create_tenant(platform, "ts-client")
    built = await asyncio.to_thread(_npx, "tsc", "-p", ".", "--noEmit", "false")
    assert built.returncode == 0, built.stdout[-4000:]
    env = {
        **os.environ,
        "TRADING_BASE_URL": f"http://127.0.0.1:{platform.settings.gateway.http_port}",
        "TRADING_TENANT": tenant.slug,
        "TRADING_EMAIL": tenant.email,
        "TRADING_PASSWORD": tenant.password,
        "TRADING_CLIENT_ORDER_ID": f"ts-{uuid.uuid4().hex[:12]}",
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        "build/run_flow.js",
        cwd=generated_client,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    status, listed = out.decode().split()
    assert status.startswith("ORDER_STATUS_") and listed == "listed", out.decode()
