"""Resource usage per service: a service's /metrics endpoint (the one every
service process runs, runtime.grpc_server) exports the process' CPU, memory
and file descriptors, the Python GC's counters, and the service info series
that names the service on dashboards (deploy/grafana)."""

from __future__ import annotations

import sys
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


async def test_metrics_endpoint_exports_process_gc_and_service_info(kit: Any) -> None:
    async with kit.server(kit.identity(), metrics_port=0) as runner:
        assert runner.metrics_port
        async with httpx.AsyncClient(trust_env=False) as http:
            reply = await http.get(f"http://127.0.0.1:{runner.metrics_port}/metrics")
    assert reply.status_code == 200
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    def value(name: str) -> float:
        (only,) = samples[name]
        return only[1]

    if sys.platform.startswith("linux"):  # prometheus-client's ProcessCollector reads /proc
        assert value("process_cpu_seconds_total") > 0
        assert value("process_resident_memory_bytes") > 10 * 1024 * 1024
        assert 0 < value("process_open_fds") <= value("process_max_fds")
        assert value("process_start_time_seconds") > 0
    generations = {labels["generation"] for labels, _ in samples["python_gc_collections_total"]}
    assert generations == {"0", "1", "2"}
    assert "python_gc_objects_collected_total" in samples
    assert any(labels.get("implementation") for labels, _ in samples["python_info"])
    assert ({"service": "identity"}, 1.0) in samples["trading_service_info"]
