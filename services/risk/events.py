"""Risk events out (Kafka `trading.risk.events` + NATS `risk.events.{tenant}`),
alerts, and the automatic switch to REDUCING when the daily loss limit is hit.

Events of operator actions (limits, kill switch) are published before the
call returns. Events raised on the CheckOrder hot path (rejections, alerts)
are published by background tasks so the check's latency does not include a
broker round trip; they are drained at shutdown. A process dying in between
loses them: they are notifications, the order's own record is execution's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

from google.protobuf import message as pb_message
from trading.risk.v1 import events_pb2 as ev
from trading.risk.v1 import risk_service_pb2 as pb

from runtime import decimals
from runtime.context import current_context
from runtime.messaging.envelope import new_envelope, uuid7
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from services.risk import domain
from services.risk.storage import RiskStore, quote_view

log = logging.getLogger(__name__)

PRODUCER = "risk"


class RiskEvents:
    """Publishes risk events on both transports and owns the background tasks."""

    def __init__(self, store: RiskStore, kafka: KafkaPublisher | None, nats: NatsPublisher | None) -> None:
        self._store = store
        self._kafka = kafka
        self._nats = nats
        self._tasks: set[asyncio.Task[None]] = set()

    async def publish(self, tenant: str, payload: pb_message.Message) -> None:
        ctx = current_context()
        envelope = new_envelope(
            payload, tenant_id=tenant, correlation_id=ctx.correlation_id, producer=PRODUCER
        )
        # Each transport on its own: a Kafka failure must not also cost the
        # live NATS fan-out (and vice versa). The first error is raised after
        # both were tried. Not durable yet: risk's state is in Redis, outside
        # the PostgreSQL outbox (see the issue 12 note).
        failures: list[Exception] = []
        for transport in (self._kafka, self._nats):
            if transport is None:
                continue
            try:
                await transport.publish(envelope, payload=payload)
            except Exception as exc:
                log.warning("risk event %s not published: %r", envelope.event_type, exc)
                failures.append(exc)
        if failures:
            raise failures[0]

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` off the caller's path; failures are logged."""
        task = asyncio.create_task(self._guard(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            log.exception("risk background publish failed")

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for background publishes (shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    # ---------------------------------------------------------------- alerts

    async def alert(
        self,
        tenant: str,
        kind: ev.RiskAlertKind.ValueType,
        severity: ev.RiskAlertSeverity.ValueType,
        message: str,
        *,
        symbol: str = "",
        observed: Decimal | None = None,
        threshold: Decimal | None = None,
    ) -> bool:
        """Raise an alert unless the same kind and symbol was raised in the last minute."""
        if not await self._store.alert_once(tenant, ev.RiskAlertKind.Name(kind), symbol):
            return False
        alert = ev.RiskAlert(
            alert_id=str(uuid7()), kind=kind, severity=severity, symbol=symbol, message=message
        )
        if observed is not None:
            alert.observed.CopyFrom(decimals.to_proto(observed))
        if threshold is not None:
            alert.threshold.CopyFrom(decimals.to_proto(threshold))
        alert.raised_at.FromNanoseconds(time.time_ns())
        await self.publish(tenant, alert)
        return True

    async def state_changed(
        self, tenant: str, status: pb.TradingStatus, previous: domain.TradingState
    ) -> None:
        changed = ev.TradingStateChanged(
            previous_state=pb.TradingState.ValueType(previous),
            state=status.state,
            reason=status.reason,
            automatic=status.automatic,
            actor_id=status.changed_by,
        )
        changed.changed_at.CopyFrom(status.changed_at)
        await self.publish(tenant, changed)

    async def on_daily_pnl(self, tenant: str, pnl: Decimal, limits: domain.Limits) -> None:
        """Warn at 80% of the daily loss limit; at 100% switch an ACTIVE tenant
        to REDUCING (never lifting a HALTED) and raise the breach alert."""
        level = domain.loss_level(pnl, limits.daily_loss_limit)
        loss = -pnl
        if level is domain.LossLevel.WARNING:
            await self.alert(
                tenant,
                ev.RISK_ALERT_KIND_DAILY_LOSS_WARNING,
                ev.RISK_ALERT_SEVERITY_WARNING,
                f"daily loss {decimals.to_proto(loss).value} is 80% or more of the limit "
                f"{decimals.to_proto(limits.daily_loss_limit).value}",
                observed=loss,
                threshold=limits.daily_loss_limit,
            )
        elif level is domain.LossLevel.BREACHED:
            status = pb.TradingStatus(
                state=pb.TRADING_STATE_REDUCING, reason="daily loss limit reached", automatic=True
            )
            status.changed_at.FromNanoseconds(time.time_ns())
            outcome, _ = await self._store.set_status(tenant, status, only_from=domain.TradingState.ACTIVE)
            if outcome == "changed":
                await self.state_changed(tenant, status, domain.TradingState.ACTIVE)
            await self.alert(
                tenant,
                ev.RISK_ALERT_KIND_DAILY_LOSS_BREACHED,
                ev.RISK_ALERT_SEVERITY_CRITICAL,
                f"daily loss {decimals.to_proto(loss).value} reached the limit "
                f"{decimals.to_proto(limits.daily_loss_limit).value}; only reducing orders are allowed",
                observed=loss,
                threshold=limits.daily_loss_limit,
            )

    async def evaluate_daily_loss(self, tenant: str, limits: domain.Limits) -> Decimal:
        """Today's PnL from stored positions, realised PnL and quotes (off the
        hot path: after fills), then :meth:`on_daily_pnl`."""
        now = time.time()
        positions = await self._store.positions(tenant)
        raw = await self._store.quotes(sorted(positions))
        now_ns = time.time_ns()
        marks = {s: (q.mark() if (q := quote_view(v, now_ns)) else None) for s, v in raw.items()}
        pnl = domain.daily_pnl(await self._store.realized_today(tenant, now), positions, marks)
        await self.on_daily_pnl(tenant, pnl, limits)
        return pnl
