"""kill -9 of a server the platform stands on, with trading running: the
PostgreSQL server (every service's state and outbox), the Kafka broker
(tansu on S3: the durable record of orders and fills) and the NATS server
(live fan-out, JetStream). Each scenario has servers of its own (harness).

The trader keeps placing orders through the outage with its idempotent
retries; afterwards nothing is lost or counted twice (harness.reconcile),
health reported the outage while it lasted and SERVING after.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime.config import Settings
from tests.faults.harness import (
    STUCK_AFTER_S,
    HealthWatch,
    Trader,
    crash,
    fault_platform,
    reconcile,
    report,
    revive,
)

pytestmark = pytest.mark.integration

# Longer than the stuck threshold, so the outage must show in health.
OUTAGE_S = STUCK_AFTER_S + 3.0


async def test_postgres_kill9_mid_trading(infra_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    async with fault_platform(infra_settings, monkeypatch) as p:
        health = HealthWatch(p.settings).start()
        trader = Trader(p).start()
        await trader.trading(3.0)

        began = time.monotonic()
        crash(p.server("postgres"))
        await trader.trading(OUTAGE_S)
        during = health.not_serving(began, time.monotonic())
        await asyncio.to_thread(revive, p.server("postgres"))
        back = time.monotonic()

        serving_at = await health.all_serving()
        await trader.trading(3.0)
        recovered = trader.first_ok_after(back)
        await trader.stop()
        await health.stop()

        # What the trader saw while the database was gone: "not now", never "no".
        seen = trader.seen(began, back)
        assert set(seen) <= {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, seen
        assert seen["UNAVAILABLE"] + seen["DEADLINE_EXCEEDED"] > 0, seen
        # Execution's state lives there: its outbox relay cannot make progress.
        assert "execution" in during, during
        assert recovered is not None and serving_at >= back
        report(
            "postgres kill -9", trader, (began, back), recovered - back, await reconcile(p, trader), during
        )


async def test_nats_kill9_mid_trading(infra_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    async with fault_platform(infra_settings, monkeypatch) as p:
        health = HealthWatch(p.settings).start()
        trader = Trader(p).start()
        await trader.trading(3.0)

        began = time.monotonic()
        crash(p.server("nats"))
        await trader.trading(OUTAGE_S)
        during = health.not_serving(began, time.monotonic())
        await asyncio.to_thread(revive, p.server("nats"))
        back = time.monotonic()

        await health.all_serving()
        await trader.trading(3.0)
        recovered = trader.first_ok_after(back)
        await trader.stop()
        await health.stop()

        # Orders do not need NATS (it carries the live fan-out): trading goes on.
        assert trader.seen(began, back)["OK"] > 0
        assert during, "no service reported the NATS outage"
        assert recovered is not None
        report("nats kill -9", trader, (began, back), recovered - back, await reconcile(p, trader), during)


async def test_kafka_broker_kill9_mid_trading(
    infra_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fault_platform(infra_settings, monkeypatch) as p:
        health = HealthWatch(p.settings).start()
        trader = Trader(p).start()
        await trader.trading(3.0)

        began = time.monotonic()
        crash(p.server("kafka"))  # tansu; its S3 store (SeaweedFS) stays
        await trader.trading(OUTAGE_S)
        during = health.not_serving(began, time.monotonic())
        await asyncio.to_thread(revive, p.server("kafka"))
        back = time.monotonic()

        serving_at = await health.all_serving()
        await trader.trading(3.0)
        await trader.stop()
        await health.stop()

        # Orders are accepted through the outage (execution's outbox holds
        # their events) until risk's quotes (a Kafka stream) go stale: then
        # risk refuses them outright (FAILED_PRECONDITION, nothing stored)
        # rather than price an order on an old quote. What cannot be
        # published is reported in health, not hidden.
        assert trader.seen(began, back)["OK"] > 0
        assert "execution" in during, during
        # Recovered: every service SERVING again (the relay drained, the
        # consumers resumed); the reconciliation proves nothing was lost.
        reconciled = await reconcile(p, trader, frozenset({"FAILED_PRECONDITION"}))
        assert all("quote" in reason for reason in trader.refused.values()), trader.refused
        report("kafka broker kill -9", trader, (began, back), serving_at - back, reconciled, during)
