"""Risk events out (Kafka `trading.risk.events` + NATS `risk.events.{tenant}`),
alerts, and the automatic switch to REDUCING when the daily loss limit is hit.

Every event goes through risk's Redis outbox (:mod:`runtime.outbox_redis`):
a change and its event are stored by one Lua script, and the shared
:class:`runtime.outbox.OutboxRelay` publishes them, woken at once. Operator
actions (limits, kill switch) store theirs before the call returns. What the
CheckOrder hot path causes (rejections, alerts, the daily-loss switch) is
stored by background tasks, so a check's latency does not include it; they
are drained at shutdown. A rejection is appended after the check that made
it: a process dying in between loses that notification (the trader had the
denial in the reply; the order's own record is execution's).
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
from runtime.outbox import KAFKA, NATS, OutboxRelay, OutboxRow, outbox_row
from services.risk import domain
from services.risk.ports import RiskStore, StateOutcome, StoredLimits
from services.risk.wire import quote_view

log = logging.getLogger(__name__)

PRODUCER = "risk"


class RiskEvents:
    """Stores risk events in the outbox (with the change they report) and owns the background tasks."""

    def __init__(self, store: RiskStore, relay: OutboxRelay | None) -> None:
        self._store = store
        self._relay = relay
        self._tasks: set[asyncio.Task[None]] = set()

    def rows(self, tenant: str, payload: pb_message.Message) -> list[OutboxRow]:
        """The outbox rows of one event: its envelope for both transports, in tenant order."""
        ctx = current_context()
        envelope = new_envelope(
            payload, tenant_id=tenant, correlation_id=ctx.correlation_id, producer=PRODUCER
        )
        return [outbox_row(envelope, KAFKA), outbox_row(envelope, NATS)]

    def stored(self) -> None:
        """Outbox rows were stored: the relay looks now rather than at its next poll."""
        if self._relay is not None:
            self._relay.wake()

    async def record(self, tenant: str, payload: pb_message.Message) -> None:
        """An event that is itself the fact (a rejection): appended on its own."""
        await self._store.add_events(tenant, self.rows(tenant, payload))
        self.stored()

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
        alert = ev.RiskAlert(
            alert_id=str(uuid7()), kind=kind, severity=severity, symbol=symbol, message=message
        )
        if observed is not None:
            alert.observed.CopyFrom(decimals.to_proto(observed))
        if threshold is not None:
            alert.threshold.CopyFrom(decimals.to_proto(threshold))
        alert.raised_at.FromNanoseconds(time.time_ns())
        raised = await self._store.alert_once(
            tenant, ev.RiskAlertKind.Name(kind), symbol, self.rows(tenant, alert)
        )
        if raised:
            self.stored()
        return raised

    async def set_state(
        self, tenant: str, status: pb.TradingStatus, *, only_from: domain.TradingState | None = None
    ) -> tuple[StateOutcome, pb.TradingStatus | None]:
        """Switch the trading state, with its TradingStateChanged in the outbox
        (see :meth:`RiskStore.set_status`)."""

        def announce(previous: domain.TradingState) -> list[OutboxRow]:
            changed = ev.TradingStateChanged(
                previous_state=pb.TradingState.ValueType(previous),
                state=status.state,
                reason=status.reason,
                automatic=status.automatic,
                actor_id=status.changed_by,
            )
            changed.changed_at.CopyFrom(status.changed_at)
            return self.rows(tenant, changed)

        outcome, before = await self._store.set_status(tenant, status, announce=announce, only_from=only_from)
        if outcome == "changed":
            self.stored()
        return outcome, before

    async def set_limits(
        self, tenant: str, limits: pb.RiskLimits, *, expected_version: int, actor: str
    ) -> StoredLimits:
        """Store limits, with their LimitsChanged in the outbox (see :meth:`RiskStore.set_limits`)."""

        def announce(stored: StoredLimits) -> list[OutboxRow]:
            changed = ev.LimitsChanged(
                limits=stored.limits, version=stored.version, actor_id=stored.updated_by
            )
            if stored.previous is not None:
                changed.previous_limits.CopyFrom(stored.previous)
            changed.changed_at.FromNanoseconds(stored.updated_at_ns)
            return self.rows(tenant, changed)

        stored = await self._store.set_limits(
            tenant, limits, expected_version=expected_version, actor=actor, announce=announce
        )
        if stored.changed:
            self.stored()
        return stored

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
            await self.set_state(tenant, status, only_from=domain.TradingState.ACTIVE)
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
