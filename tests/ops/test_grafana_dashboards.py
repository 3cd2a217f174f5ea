"""The Grafana dashboards an operator gets (deploy/grafana): each is a
dashboard Grafana can load (unique uid, title, panels with the provisioned
Prometheus datasource and queries), every query parses as PromQL (promtool
checks them as recording rules), and every metric a query reads, and every
label it matches on, is one the code defines: the names come from the
prometheus-client registry after importing every module that defines
metrics, with the exposition suffixes (_total, _bucket, _count, _sum,
_created) and the default process_* / python_* collectors."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
COMPOSE = ROOT / "docker-compose.yml"

EXPECTED = {"overview.json", "messaging.json", "storage.json", "trading.json"}
# Grafana's interval macros, replaced by what they expand to at most scrape
# settings before promtool sees a query.
MACROS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
# Series Prometheus makes itself for every scrape target.
SYNTHETIC = {"up": {"instance", "job"}, "scrape_duration_seconds": {"instance", "job"}}
# Labels every scraped series carries (added by Prometheus).
TARGET_LABELS = {"instance", "job"}


def _dashboards() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        yield path.name, json.loads(path.read_text())


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels


def _queries() -> Iterator[tuple[str, int, str, str]]:
    """(dashboard uid, panel id, refId, expression) of every query."""
    for _, board in _dashboards():
        for panel in _panels(board):
            for target in panel.get("targets", []):
                yield board["uid"], panel["id"], target["refId"], target["expr"]


def _expand(expr: str) -> str:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    return expr


def _datasource_uid() -> str:
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = config["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    return str(source["uid"])


# ---------------------------------------------------------------- structure


def test_dashboards_have_what_grafana_needs() -> None:
    boards = dict(_dashboards())
    assert set(boards) >= EXPECTED, f"missing dashboards: {EXPECTED - set(boards)}"
    datasource = {"type": "prometheus", "uid": _datasource_uid()}
    uids: set[str] = set()
    titles: set[str] = set()
    for name, board in boards.items():
        uid = board.get("uid")
        assert isinstance(uid, str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid), (name, uid)
        assert uid not in uids, f"{name}: uid {uid} used twice"
        uids.add(uid)
        assert board.get("title") and board["title"] not in titles, name
        titles.add(board["title"])
        assert isinstance(board.get("schemaVersion"), int), name
        assert "trading" in board.get("tags", []), name  # the dashboards' links find each other by tag
        ids: set[int] = set()
        cells: dict[tuple[int, int], str] = {}  # grid cells taken, to catch overlapping panels
        panels = list(_panels(board))
        assert any(p["type"] != "row" for p in panels), f"{name} has no panels"
        for panel in panels:
            where = f"{name} panel {panel.get('id')} {panel.get('title')!r}"
            assert isinstance(panel.get("id"), int) and panel["id"] not in ids, where
            ids.add(panel["id"])
            assert panel.get("title") and panel.get("type"), where
            grid = panel["gridPos"]
            assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, where
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{where} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = where
            if panel["type"] == "row":
                continue
            assert panel.get("datasource") == datasource, where
            targets = panel.get("targets") or []
            assert targets, f"{where} has no queries"
            refs = [t.get("refId") for t in targets]
            assert all(refs) and len(set(refs)) == len(refs), where
            for target in targets:
                assert target.get("datasource") == datasource, where
                assert isinstance(target.get("expr"), str) and target["expr"].strip(), where


def test_compose_provisions_grafana_with_these_files() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    grafana = compose["services"]["grafana"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "trading.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [mounts["./deploy/grafana/dashboards"]]
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASHBOARDS / Path(home).name).is_file()


# ---------------------------------------------------------------- PromQL syntax


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is needed (.ci/run installs Debian's prometheus)"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _rules_file(path: Path, queries: list[tuple[str, int, str, str]]) -> None:
    rules = [
        {"record": f"dashboard:{uid.replace('-', '_')}:panel{panel}_{ref}", "expr": _expand(expr)}
        for uid, panel, ref, expr in queries
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))


def test_every_query_parses(tmp_path: Path) -> None:
    queries = list(_queries())
    assert len(queries) > 50
    _rules_file(tmp_path / "dashboards.yml", queries)
    result = _promtool("check", "rules", "dashboards.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(queries)} rules found" in result.stdout


def test_the_syntax_check_catches_a_broken_query(tmp_path: Path) -> None:
    _rules_file(tmp_path / "broken.yml", [("x", 1, "A", "sum by (service (rate(up[$__rate_interval]))")])
    assert _promtool("check", "rules", "broken.yml", cwd=tmp_path).returncode != 0


def _overview_query(title: str) -> str:
    board = json.loads((DASHBOARDS / "overview.json").read_text())
    (panel,) = [p for p in _panels(board) if p["title"] == title]
    return _expand(panel["targets"][0]["expr"])


def test_the_service_joins_name_the_right_series(tmp_path: Path) -> None:
    """The overview names a process' series by joining trading_service_info on
    the scrape target, and one process' own calls are picked the same way:
    promtool evaluates both on series shaped like a real scrape."""
    gateway, execution, risk = "gateway:51061", "execution:51055", "risk:51054"
    series = {
        f'process_cpu_seconds_total{{instance="{risk}",job="trading"}}': "0+7.5x40",  # 0.5 cores
        f'process_resident_memory_bytes{{instance="{risk}",job="trading"}}': "300x40",
        f'grpc_client_handling_seconds_count{{instance="{gateway}",job="trading",'
        'service="trading.risk.v1.RiskService",method="GetLimits",code="OK"}': "0+15x40",  # 1/s
        f'grpc_client_handling_seconds_count{{instance="{execution}",job="trading",'
        'service="trading.risk.v1.RiskService",method="CheckOrder",code="OK"}': "0+150x40",
    }
    for instance, service in ((gateway, "gateway"), (execution, "execution"), (risk, "risk")):
        series[f'trading_service_info{{instance="{instance}",job="trading",service="{service}"}}'] = "1x40"
    test = {
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "promql_expr_test": [
                    {
                        "expr": _overview_query("CPU (cores) by service"),
                        "eval_time": "5m",
                        "exp_samples": [
                            {"labels": f'{{instance="{risk}",job="trading",service="risk"}}', "value": 0.5}
                        ],
                    },
                    {
                        "expr": _overview_query("Resident memory by service"),
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": f'{{instance="{risk}",job="trading",service="risk"}}',
                                "value": 300,
                            }
                        ],
                    },
                    {
                        # Only the callers' own client calls: the gateway's, picked by the join.
                        "expr": "sum by (service, code) (rate(grpc_client_handling_seconds_count[1m]) "
                        'and on (instance) trading_service_info{service="gateway"})',
                        "eval_time": "5m",
                        "exp_samples": [
                            {"labels": '{code="OK",service="trading.risk.v1.RiskService"}', "value": 1}
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "joins_test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = _promtool("test", "rules", "joins_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- metric names

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "Inf", "NaN",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions,
    keywords, label names (matchers, grouping lists), strings or durations."""
    text = _STRING.sub('""', _expand(expr))
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    return {name for name in _IDENT.findall(text) if name not in _KEYWORDS}


def matched_labels(expr: str) -> dict[str, set[str]]:
    """Label names matched on per metric selector (``name{label="..."}``)."""
    out: dict[str, set[str]] = {}
    for name, matchers in _SELECTOR.findall(_STRING.sub('""', expr)):
        out.setdefault(name, set()).update(_MATCHER_LABEL.findall(matchers))
    return out


def test_the_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (service, le) (rate(grpc_server_handling_seconds_bucket{method="A"}'
        "[$__rate_interval]))) / clamp_min(sum(rate(up[5m] offset 1m)), 1e-9) * on (instance) group_left"
        " (service) trading_service_info > bool 0"
    )
    assert metric_names(expr) == {"grpc_server_handling_seconds_bucket", "up", "trading_service_info"}
    assert matched_labels(expr) == {"grpc_server_handling_seconds_bucket": {"method"}}


def _modules_defining_metrics() -> list[str]:
    modules = []
    for top in ("runtime", "services", "gateway"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.name == "__main__.py" or "prometheus_client" not in path.read_text():
                continue
            modules.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return modules


@cache
def defined_metrics() -> dict[str, set[str]]:
    """Every sample name the platform's processes can expose -> its label names."""
    for module_name in _modules_defining_metrics():
        module = importlib.import_module(module_name)
        # Metrics made on first use (runtime.interceptors.default_server_metrics, ...).
        for attr, value in vars(module).items():
            if re.fullmatch(r"default_\w*metrics", attr) and callable(value):
                value()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    }
    # Label names per collector (prometheus-client keeps them on the metric wrappers).
    collector_names: dict[Any, list[str]] = REGISTRY._collector_to_names
    labels_of: dict[str, set[str]] = {}
    for collector, names in collector_names.items():
        labelnames = set(getattr(collector, "_labelnames", ()))
        for name in names:
            labels_of[name] = labelnames
    defined: dict[str, set[str]] = dict(SYNTHETIC)
    for family in REGISTRY.collect():
        base = labels_of.get(family.name, set())
        for suffix in suffixes.get(family.type, ("",)):
            extra = {"le"} if suffix == "_bucket" else set()
            defined[family.name + suffix] = base | extra | TARGET_LABELS
        for sample in family.samples:  # collectors without wrappers: process_*, python_*
            entry = defined.setdefault(sample.name, set(TARGET_LABELS))
            entry.update(sample.labels)
    return defined


def test_defined_metrics_include_the_defaults_and_the_platforms() -> None:
    defined = defined_metrics()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_gc_collections_total",
        "grpc_server_handling_seconds_bucket",
        "trading_postgres_client_seconds_count",
        "trading_messaging_publish_failures_total",
        "trading_service_info",
        "outbox_backlog",
    ):
        assert name in defined, name
    assert "trading_redis_client_seconds" not in defined  # a histogram exposes only its suffixed series
    assert "trading_orders_by_status_total" not in defined  # and nothing made up
    assert defined["trading_redis_client_seconds_bucket"] >= {"service", "operation", "outcome", "le"}


def test_every_query_reads_metrics_the_code_defines() -> None:
    defined = defined_metrics()
    unknown: list[str] = []
    bad_labels: list[str] = []
    for uid, panel, ref, expr in _queries():
        for name in sorted(metric_names(expr) - set(defined)):
            unknown.append(f"{uid} panel {panel}{ref}: {name}")
        for name, labels in matched_labels(expr).items():
            if name in defined and not labels <= defined[name]:
                bad_labels.append(
                    f"{uid} panel {panel}{ref}: {name} has no label {sorted(labels - defined[name])}"
                )
    assert not unknown, "metrics no code defines:\n" + "\n".join(unknown)
    assert not bad_labels, "\n".join(bad_labels)


def test_the_alert_rules_read_metrics_the_code_defines_too() -> None:
    """The same check on deploy/prometheus/alerts.yml (its recording rules count as defined)."""
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    known = set(defined_metrics()) | {rule["record"] for rule in rules if "record" in rule}
    unknown = {
        f"{rule.get('alert') or rule.get('record')}: {name}"
        for rule in rules
        for name in metric_names(rule["expr"])
        if name not in known
    }
    assert not unknown, sorted(unknown)


@pytest.mark.parametrize(
    "metric",
    [
        "trading_postgres_client_seconds_bucket",
        "trading_redis_client_seconds_bucket",
        "trading_clickhouse_client_seconds_bucket",
        "trading_messaging_publish_seconds_bucket",
        "trading_messaging_consumer_lag",
        "outbox_backlog",
        "trading_messaging_dead_lettered_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "trading_execution_order_status_changes_total",
        "trading_risk_denials_total",
        "trading_decision_signals_total",
    ],
)
def test_each_family_the_operator_expects_is_on_a_dashboard(metric: str) -> None:
    assert any(metric in metric_names(expr) for *_, expr in _queries()), metric
