"""/docs and /redoc work without internet: their assets come from the gateway
itself (fastapi-offline's packaged Swagger UI and ReDoc), and a real headless
Chromium renders the operations of the served document (screenshot kept in
build/docs.png). .ci/run installs Debian's chromium."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from tests.contract.conftest import RunningPlatform

pytestmark = pytest.mark.integration

SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "docs.png"


async def test_docs_assets_are_served_by_the_gateway(platform: RunningPlatform) -> None:
    base = f"http://127.0.0.1:{platform.settings.gateway.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as gw:
        for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            html = await gw.get(page)
            assert html.status_code == 200 and "text/html" in html.headers["content-type"]
            assert f"/static-offline-docs/{asset}" in html.text and "cdn" not in html.text.lower()
            script = await gw.get(f"/static-offline-docs/{asset}")
            assert script.status_code == 200 and len(script.content) > 100_000


async def _chromium(*args: str) -> tuple[int, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is needed (.ci/run installs Debian's chromium)"
    proc = await asyncio.create_subprocess_exec(
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        # Let the page's scripts fetch /openapi.json and render.
        "--virtual-time-budget=20000",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no chromium here (CI has it)"
)
async def test_a_headless_browser_renders_the_operations(platform: RunningPlatform) -> None:
    url = f"http://127.0.0.1:{platform.settings.gateway.http_port}/docs"
    code, dom = await _chromium("--dump-dom", url)
    assert code == 0, dom[-2000:]
    # Swagger UI rendered the document: operation blocks with our paths.
    assert "opblock" in dom and "/v1/orders" in dom, dom[:2000]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    code, out = await _chromium("--window-size=1280,1600", f"--screenshot={SCREENSHOT}", url)
    assert code == 0 and SCREENSHOT.exists() and SCREENSHOT.stat().st_size > 20_000, out[-2000:]
