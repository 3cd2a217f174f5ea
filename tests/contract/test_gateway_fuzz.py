"""Property-based fuzzing of the running gateway with schemathesis, driven by
its own /openapi.json, with every check schemathesis has: no 5xx (RPCs not
built yet, which answer 501, are left out of the run), responses that
conform to the document (status, content type, headers, schema), data the
document allows is accepted and data it forbids refused, missing credentials
are refused, unsupported methods answer 405, and the stateful phase follows
the document's links (a created order can be read and canceled).

schemathesis is a pinned dev dependency; its command is run from this
interpreter's environment (or TRADING_SCHEMATHESIS names another one).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from gateway.routes import build_routes
from gateway.templates import openapi_path
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from services.identity.apikeys import ApiKeyPrincipal, new_secret, publish, withdraw
from services.identity.domain import token_hash
from tests.contract.conftest import RunningPlatform, create_tenant
from tests.support.services import unbuilt_methods

pytestmark = pytest.mark.integration

SCHEMATHESIS = os.environ.get("TRADING_SCHEMATHESIS") or str(Path(sys.executable).parent / "schemathesis")
SCHEMATHESIS_FOUND = Path(SCHEMATHESIS).exists()
# The whole report of the last run (the assertion shows only its end); build/ is git-ignored.
REPORT = Path(__file__).resolve().parents[2] / "build" / "schemathesis-report.txt"


# What schemathesis' positive_data_acceptance takes from a schema-valid
# request beyond its defaults: 422 (the Idempotency-Key it generated was used
# before with another request: the documented answer, draft-ietf-httpapi-idempotency-key).
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]


def schemathesis_config(document: dict[str, object]) -> str:
    """schemathesis.toml for the run, derived from the served document: a
    400 counts as accepting valid data only on operations whose
    ``x-constraints`` name rules no schema can state (fields compared with
    each other or with the clock, server state); page tokens are left empty
    (only the server issues them)."""
    lines = [
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {_ACCEPTED!r}".replace("'", '"'),
        "",
        "[parameters]",
        '"page_token" = ""',
    ]
    paths = document["paths"]
    assert isinstance(paths, dict)
    for operations in paths.values():
        for operation in operations.values():
            if operation.get("x-constraints"):
                lines += [
                    "",
                    "[[operations]]",
                    f'include-operation-id = "{operation["operationId"]}"',
                    "[operations.checks.positive_data_acceptance]",
                    f"expected-statuses = {[*_ACCEPTED, '400']!r}".replace("'", '"'),
                ]
    return "\n".join(lines) + "\n"


def _principal(tenant_id: str, user_id: str, scopes: frozenset[str]) -> ApiKeyPrincipal:
    return ApiKeyPrincipal(
        str(uuid.uuid4()), tenant_id, user_id, scopes, frozenset({"ADMIN", "TRADER"}), None
    )


async def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    assert SCHEMATHESIS_FOUND, f"schemathesis not found at {SCHEMATHESIS} (./dev setup installs it)"
    base = f"http://127.0.0.1:{platform.settings.gateway.http_port}"
    routes = build_routes()
    async with httpx.AsyncClient(base_url=base, timeout=20) as gw:
        redis = open_redis(platform.settings, REDIS_ADMIN)
        scopes = frozenset({s for r in routes for s in r.policy.scopes} | {"admin"})
        # The fuzzer gets a tenant of its own: it changes limits, the trading
        # state and users' roles at random, which must not reach the tenants
        # the other tests trade in.
        tenant = await create_tenant(platform, "fuzz")
        secret = new_secret()
        await publish(
            redis,
            token_hash(secret),
            _principal(tenant.tenant_id, tenant.admin_user_id, scopes),
            now=time.time(),
        )
        unbuilt = unbuilt_methods()
        served = (await gw.get("/openapi.json")).json()
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(served))
    excluded = [
        re.escape(openapi_path(r.template))
        for r in routes
        if r.streaming or (r.target, r.method.name) in unbuilt
    ]
    cmd = [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "-H",
        f"X-Api-Key: {secret}",
        "--checks",
        "all",
        "--max-examples",
        "10",
        # One worker: with several threads, hypothesis' ast.parse of lambda
        # sources hits CPython 3.11's "AST constructor recursion depth
        # mismatch" (a thread-safety bug of the compiler, seen in CI).
        "--workers",
        "1",
        "--request-timeout",
        "20",
        # Strings a client can send: valid Unicode (lone surrogates are not text).
        "--generation-codec",
        "utf-8",
        "--no-color",
    ]
    if excluded:
        cmd += ["--exclude-path-regex", "^(" + "|".join(excluded) + ")$"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
    finally:
        await withdraw(redis, token_hash(secret))
        await redis.aclose()
    report = out.decode(errors="replace")
    # The whole report (the assertion shows its end): build/ is git-ignored.
    saved = REPORT
    await asyncio.to_thread(saved.parent.mkdir, exist_ok=True)
    await asyncio.to_thread(saved.write_text, report)
    assert proc.returncode == 0, f"full report: {saved}\n" + report[-6000:]
