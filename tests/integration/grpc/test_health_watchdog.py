"""grpc.health follows stuck background work, for real: a Kafka subscriber
whose broker (our own tansu) is killed turns its ServiceRunner NOT_SERVING
within the threshold, saying why (as the operator's `tradingctl health` and
the gateway's /readyz read it), and SERVING again once the broker is back and
events flow."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from trading.common.v1 import decimal_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from gateway.app import Downstreams
from runtime.config import HealthSettings, Settings
from runtime.contracts import event_registry
from runtime.grpc_server import ServiceRunner
from runtime.health import HealthMonitor, HealthProbe
from runtime.messaging import Event, new_envelope
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber
from runtime.messaging.kafka.admin import ensure_topics
from tests.support.polling import eventually
from tools.infra import ManagedProcess, free_port, start_tansu
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


async def test_stuck_kafka_subscriber_turns_health_not_serving_then_serving(kit: Any, tmp_path: Path) -> None:
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
        # What the gateway's /readyz lists: the service, NOT_SERVING, and why.
        seen_by_gateway = (await downstreams.health(timeout=2.0))["portfolio"]
        assert seen_by_gateway.status == "NOT_SERVING"
        assert "kafka:watchdog" in seen_by_gateway.reason
        # A standard client sees the standard protocol: NOT_SERVING for "" too.
        assert (await health_probe(settings, "portfolio", address, service="")).status == "NOT_SERVING"

        # The broker is back (tansu keeps topics in memory: create it again).
        broker = await asyncio.to_thread(start_tansu, port, log_path=tmp_path / "tansu-2.log")
        await ensure_topics(settings.kafka, [topic], partitions=1)
        await eventually(lambda: _serving(probe), timeout=60, what="SERVING after the broker is back")
        assert monitor.check() == []
        assert (await probe()).reason == ""
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
