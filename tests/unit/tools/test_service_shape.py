"""Every service has the one shape README's architecture section draws.

``services/<name>/``: ``main.py`` (the ServiceSpec), ``api.py`` (the
servicer), ``domain/`` (pure logic), ``ports.py`` and ``adapters/`` with an
in-memory twin; its ports' suite in ``tests/suites/<name>_ports.py`` and its
servicer tests in ``tests/unit/services/<name>/``. A new service (or one that
drifts) fails here rather than in a reviewer's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from runtime.config import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[3]
# The gateway is the edge (gateway/), not a service package.
SERVICES = [name for name in SERVICE_NAMES if name != "gateway"]
# Modules that do I/O: a domain module importing one is not pure.
IO_MODULES = (
    "asyncpg", "redis", "nats", "aiokafka", "grpc", "clickhouse_connect", "httpx", "runtime.storage",
)  # fmt: skip


def test_the_service_list_is_the_tree() -> None:
    packages = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "main.py").exists())
    assert packages == sorted(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_has_the_shape(name: str) -> None:
    package = ROOT / "services" / name
    for part in ("main.py", "api.py", "ports.py", "domain/__init__.py", "adapters/memory.py"):
        assert (package / part).exists(), f"services/{name}/{part} is missing"
    real = {p.name for p in (package / "adapters").glob("*.py")} - {"__init__.py", "memory.py"}
    assert real, f"services/{name}/adapters has no real adapter beside memory.py"
    assert (ROOT / "tests" / "suites" / f"{name}_ports.py").exists(), f"no port suite for {name}"
    servicer_tests = list((ROOT / "tests" / "unit" / "services" / name).glob(f"test_{name}_api*.py"))
    assert servicer_tests, f"no servicer tests for {name} on its in-memory adapters"


@pytest.mark.parametrize("name", SERVICES)
def test_a_domain_does_no_io(name: str) -> None:
    for path in (ROOT / "services" / name / "domain").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert not module.startswith(IO_MODULES), f"{path.relative_to(ROOT)} imports {module}"
