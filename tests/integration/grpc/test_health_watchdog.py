"""grpc.health follows stuck background work, for real: a Kafka subscriber
whose broker (our own tansu) is killed turns its ServiceRunner NOT_SERVING
within the threshold, saying why (as the operator's `tradingctl health` and
the gateway's /readyz read it), and SERVING again once the broker is back and
events flow."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import StreamConfig
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from trading.common.v1 import decimal_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from gateway.app import Downstreams, create_app
from runtime.config import HealthSettings, Settings, get_settings
from runtime.contracts import event_registry
from runtime.grpc_client import ClientFactory
from runtime.grpc_server import ServiceRunner
from runtime.health import ComponentStatus, HealthMonitor, HealthProbe
from runtime.messaging import Event, new_envelope
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber
from runtime.messaging.kafka.admin import ensure_topics
from runtime.messaging.nats import JetStreamSubscriber
from tests.support.polling import eventually
from tools.cli import main as tradingctl
from tools.infra import ManagedProcess, free_port, start_nats, start_tansu
from tools.supervisor import health_probe

TICK = "trading.marketdata.v1.Tick"
STUCK_AFTER_S = 2.0
# Detection is threshold + the readiness poll + aiokafka noticing the broker
# is gone; generous on a loaded 2-core machine.
DETECTION_SLACK_S = 10.0


def tick(symbol: str) -> Any:
    payload = md_events.Tick(
        symbol=symbol,
        bid_price=decimal_pb2.Decimal(value="100.25"),
        ask_price=decimal_pb2.Decimal(value="100.5"),
        sequence=1,
        source="test",
    )
    payload.exchange_time.GetCurrentTime()
    payload.receive_time.GetCurrentTime()
    return new_envelope(payload, tenant_id="", correlation_id=f"corr-{symbol}", producer="tests.health")


async def test_stuck_kafka_subscriber_turns_health_not_serving_then_serving(
    kit: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    broker: ManagedProcess = await asyncio.to_thread(start_tansu, port, log_path=tmp_path / "tansu-1.log")
    base: Settings = kit.settings()
    settings = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"}),
            "health": HealthSettings(stuck_after_s=STUCK_AFTER_S),
        }
    )
    registry = event_registry()
    prefix = f"health-{uuid.uuid4().hex[:8]}."
    topic = prefix + registry.route(TICK).kafka_topic
    await ensure_topics(settings.kafka, [topic], partitions=1)

    monitor = HealthMonitor()  # this runner's own: other tests' components do not count
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handler(event: Event) -> None:
        await received.put(event.payload.symbol)  # type: ignore[attr-defined]

    publisher = KafkaPublisher(settings.kafka, registry, topic_prefix=prefix, client_id="health-test")
    await publisher.start()
    subscriber = KafkaSubscriber(
        settings.kafka,
        registry,
        handler,
        group=f"{prefix}watchdog",
        name="watchdog",
        dead_letters=publisher,
        event_types=[TICK],
        topic_prefix=prefix,
        health=monitor,
    )
    runner = ServiceRunner(
        "portfolio",
        settings,
        lambda server: [],
        address="127.0.0.1:0",
        metrics_port=-1,
        ready_poll_s=0.1,
        monitor=monitor,
    )
    address = ""
    downstreams: Downstreams | None = None

    async def probe() -> HealthProbe:
        return await health_probe(settings, "portfolio", address, timeout=2.0)

    try:
        await subscriber.start()
        await subscriber.wait_assigned(timeout=30)
        await runner.start()
        address = f"127.0.0.1:{runner.port}"
        settings.service_addresses["portfolio"] = address
        downstreams = Downstreams(settings)
        await eventually(lambda: _serving(probe), timeout=30, what="SERVING with the broker up")
        await publisher.publish(tick("BEFORE"))
        assert await asyncio.wait_for(received.get(), 30) == "BEFORE"
        lag = {"transport": "kafka", "consumer": "watchdog", "source": f"{topic}/0"}
        # Set after the commit that follows the handler: wait for it.
        await eventually(
            _sample_of("trading_messaging_consumer_lag", lag), timeout=10, what="consumer lag reported"
        )
        assert REGISTRY.get_sample_value("trading_messaging_consumer_lag", lag) == 0

        # The broker dies: the subscriber's polls still return (empty), but
        # fetches go unanswered and the group coordinator is gone.
        await asyncio.to_thread(broker.stop)
        killed_at = time.monotonic()
        down = await eventually(
            lambda: _not_serving(probe), timeout=STUCK_AFTER_S + DETECTION_SLACK_S, what="NOT_SERVING"
        )
        detected_after = time.monotonic() - killed_at
        assert detected_after >= STUCK_AFTER_S  # a failure streak shorter than the threshold is tolerated
        assert down.reason.startswith("stuck: kafka:watchdog: "), down.reason
        assert [s.name for s in monitor.check()] == ["kafka:watchdog"]
        # What the gateway's /readyz lists: the service, NOT_SERVING, and why
        # (the other services run nowhere here: UNAVAILABLE).
        readyz = await _readyz(settings, downstreams)
        assert readyz.status_code == 503
        body = readyz.json()
        assert body["services"]["portfolio"] == "NOT_SERVING"
        assert body["services"]["risk"] == "UNAVAILABLE"
        assert body["not_serving"]["portfolio"].startswith("stuck: kafka:watchdog: "), body
        # A standard client sees the standard protocol: NOT_SERVING for "" too.
        assert (await health_probe(settings, "portfolio", address, service="")).status == "NOT_SERVING"
        # And the operator's command says why.
        monkeypatch.setenv("TRADING_VAR_DIR", str(settings.var_dir))
        get_settings.cache_clear()
        try:
            argv = ["health", "--address", address, "--callee", "portfolio"]
            assert await asyncio.to_thread(tradingctl, argv) == 1
        finally:
            get_settings.cache_clear()
        assert capsys.readouterr().out.startswith("NOT_SERVING (stuck: kafka:watchdog: ")

        # The broker is back (tansu keeps topics in memory: create it again).
        broker = await asyncio.to_thread(start_tansu, port, log_path=tmp_path / "tansu-2.log")
        await ensure_topics(settings.kafka, [topic], partitions=1)
        await eventually(lambda: _serving(probe), timeout=60, what="SERVING after the broker is back")
        assert monitor.check() == []
        assert (await probe()).reason == ""
        body = (await _readyz(settings, downstreams)).json()
        assert body["services"]["portfolio"] == "SERVING"
        assert "portfolio" not in body["not_serving"]
        await _publish_until_sent(publisher, tick("AFTER"))
        assert await asyncio.wait_for(received.get(), 60) == "AFTER"
    finally:
        if downstreams is not None:
            await downstreams.close()
        await runner.stop(grace=1.0)
        await subscriber.stop()
        await publisher.close()
        await asyncio.to_thread(broker.stop)
    print(f"NOT_SERVING {detected_after:.1f}s after the broker died (threshold {STUCK_AFTER_S}s)")


async def _readyz(settings: Settings, downstreams: Downstreams) -> httpx.Response:
    """GET /readyz of a gateway app (in process) over these downstreams."""
    clients = ClientFactory(settings, tracing=False, principal="gateway")
    redis = Redis.from_url("redis://127.0.0.1:1/0")  # /readyz does not use it; never connected
    app = create_app(downstreams, clients=clients, redis=redis)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.get("/readyz")
    finally:
        await clients.close()
        await redis.aclose()


async def _serving(probe: Any) -> HealthProbe | None:
    answer: HealthProbe = await probe()
    return answer if answer.serving else None


async def _not_serving(probe: Any) -> HealthProbe | None:
    answer: HealthProbe = await probe()
    return answer if answer.status == "NOT_SERVING" else None


async def _publish_until_sent(publisher: KafkaPublisher, envelope: Any) -> None:
    """The producer may need a metadata refresh after the broker restart."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await publisher.publish(envelope)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_durable_nats_subscriber_is_stuck_while_its_server_is_down(tmp_path: Path) -> None:
    """The JetStream pull loop: fetch timeouts are idleness while connected,
    failures once the connection is gone; back to healthy after reconnecting."""
    port = free_port()
    store = tmp_path / "jetstream"
    server = await asyncio.to_thread(start_nats, port, store, log_path=tmp_path / "nats-1.log")
    nc = await nats.connect(
        f"nats://127.0.0.1:{port}", max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
    )
    monitor = HealthMonitor(stuck_after_s=STUCK_AFTER_S)
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handler(event: Event) -> None:
        await received.put(event.payload.symbol)  # type: ignore[attr-defined]

    subscriber = JetStreamSubscriber(
        nc,
        event_registry(),
        handler,
        subjects=["health.ticks"],
        durable="watchdog",
        stream="HEALTH",
        health=monitor,
    )
    try:
        await nc.jetstream().add_stream(StreamConfig(name="HEALTH", subjects=["health.>"]))
        await subscriber.start()
        await asyncio.sleep(STUCK_AFTER_S + 1)  # idle longer than the threshold: still healthy
        assert monitor.check() == []

        await asyncio.to_thread(server.stop)
        killed_at = time.monotonic()
        [stuck] = await eventually(
            _stuck_of(monitor), timeout=STUCK_AFTER_S + DETECTION_SLACK_S, what="nats subscriber stuck"
        )
        assert time.monotonic() - killed_at >= STUCK_AFTER_S
        assert stuck.name == "nats:watchdog"
        assert stuck.reason, stuck
        print(f"nats stuck: {stuck.describe()}")

        server = await asyncio.to_thread(start_nats, port, store, log_path=tmp_path / "nats-2.log")
        await eventually(_healthy(monitor), timeout=60, what="nats subscriber healthy after reconnect")
        await nc.jetstream().publish("health.ticks", tick("AFTER").SerializeToString())
        assert await asyncio.wait_for(received.get(), 30) == "AFTER"
    finally:
        await subscriber.stop()
        await nc.close()
        await asyncio.to_thread(server.stop)


def _sample_of(name: str, labels: dict[str, str]) -> Callable[[], Awaitable[bool]]:
    async def present() -> bool:
        return REGISTRY.get_sample_value(name, labels) is not None

    return present


def _stuck_of(monitor: HealthMonitor) -> Callable[[], Awaitable[list[ComponentStatus]]]:
    async def check() -> list[ComponentStatus]:
        return monitor.check()

    return check


def _healthy(monitor: HealthMonitor) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        statuses = monitor.statuses()
        return bool(statuses) and not any(s.reason for s in statuses)

    return check
