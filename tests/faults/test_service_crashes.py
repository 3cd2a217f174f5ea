"""kill -9 of each stateful service in turn, with trading running: the
supervisor (as behind `./dev run`) restarts it; the trader's idempotent
retries ride it out; afterwards nothing is lost or counted twice
(harness.reconcile). One platform for the whole round keeps CI short: the
reconciliation at the end covers every crash before it.
"""

from __future__ import annotations

import time

import pytest

from runtime.config import Settings
from tests.faults.harness import HealthWatch, Trader, crash_service, fault_platform, reconcile, report
from tests.support.polling import eventually
from tools.infra import port_answers

pytestmark = pytest.mark.integration

# The services that hold state of their own (PostgreSQL) on the order path.
STATEFUL = ("execution", "portfolio", "risk", "audit", "identity")


async def test_each_stateful_service_kill9_mid_trading(
    infra_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fault_platform(infra_settings, monkeypatch) as p:
        health = HealthWatch(p.settings).start()
        trader = Trader(p).start()
        await trader.trading(2.0)
        first_crash = time.monotonic()
        unhealthy: set[str] = set()
        restarted_in: dict[str, float] = {}
        for name in STATEFUL:
            began = time.monotonic()
            crash_service(p, name)
            host, port = p.settings.address_of(name).rsplit(":", 1)

            async def down(h: str = host, q: int = int(port)) -> bool:
                return not port_answers(h, q)

            await eventually(down, 10.0, f"{name} gone")
            back = await health.all_serving(timeout=60.0)
            restarted_in[name] = back - began
            unhealthy |= health.not_serving(began, back)
            assert name in unhealthy, f"health did not see {name} down"
            await trader.trading(1.5)
        last = time.monotonic()
        await trader.stop()
        await health.stop()
        print(f"FAULT-RESTARTS {restarted_in}", flush=True)
        report(
            "kill -9 of " + ", ".join(STATEFUL),
            trader,
            (first_crash, last),
            max(restarted_in.values()),
            await reconcile(p, trader),
            unhealthy,
        )
