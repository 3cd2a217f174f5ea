"""The monitoring an operator gets: deploy/prometheus's scrape config and
alert rules are valid for a real Prometheus (promtool, from Debian's
prometheus package, which .ci/run installs), the alerts fire on the series
that should fire them (alerts_test.yml), and the scrape targets are the
services' metrics ports in docker-compose.yml."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is needed (.ci/run installs Debian's prometheus)"
    return subprocess.run([tool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("check", [("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")])
def test_promtool_accepts_the_files(check: tuple[str, ...]) -> None:
    result = _promtool(*check)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_when_they_should_and_only_then() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_is_scraped_on_its_metrics_port() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    env = (
        compose["x-env"]
        if "x-env" in compose
        else next(
            v
            for k, v in compose.items()
            if k.startswith("x-") and isinstance(v, dict) and "TRADING_SERVICE_ADDRESSES" in v
        )
    )
    addresses = json.loads(env["TRADING_SERVICE_ADDRESSES"])
    # TelemetrySettings.metrics_port 0: the gRPC port + 1000.
    expected = {
        f"{host_port.split(':')[0]}:{int(host_port.split(':')[1]) + 1000}" for host_port in addresses.values()
    }
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert set(job["static_configs"][0]["targets"]) == expected
