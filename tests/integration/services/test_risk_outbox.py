"""Risk's changes and their events are stored together (its Redis outbox), on
real Redis, NATS and tansu: what is stored while nothing publishes (a relay
down, a crash before publishing) is announced once a relay runs, in order;
concurrent switches each announce the state they really replaced."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from google.protobuf import message as pb_message
from redis.asyncio import Redis
from trading.common.v1 import decimal_pb2, event_pb2
from trading.risk.v1 import events_pb2 as ev
from trading.risk.v1 import risk_service_pb2 as pb

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging.envelope import unpack
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from runtime.messaging.nats.connect import connect_nats
from runtime.outbox import OutboxRelay
from runtime.outbox_redis import RedisOutbox
from services.risk import domain
from services.risk.adapters.redis import RedisRiskStore
from services.risk.events import RiskEvents
from services.risk.wire import canonical_limits
from tests.support.nats import received_events
from tests.support.polling import eventually

D = decimal_pb2.Decimal


@pytest_asyncio.fixture(loop_scope="session")
async def outbox(redis_client: Redis) -> AsyncIterator[RedisOutbox]:
    """Risk's outbox under a name of its own (the running risk services' relays leave it alone)."""
    name = f"risk_{uuid.uuid4().hex[:8]}"
    yield RedisOutbox(redis_client, name)
    keys = [k async for k in redis_client.scan_iter(match=f"*{name}*")]
    if keys:
        await redis_client.delete(*keys)


async def stored_events(redis: Redis, outbox: RedisOutbox, tenant: str) -> list[pb_message.Message]:
    """The tenant's events waiting in the outbox (the NATS copy of each)."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(outbox.stream(tenant))  # type: ignore[assignment]
    envelopes = [event_pb2.EventEnvelope.FromString(f[b"e"]) for _, f in entries if f[b"d"] == b"nats"]
    return [unpack(e, event_registry()) for e in envelopes]


def status(state: int, reason: str) -> pb.TradingStatus:
    message = pb.TradingStatus(state=state, reason=reason, changed_by="ops-1")  # type: ignore[arg-type]
    message.changed_at.FromNanoseconds(time.time_ns())
    return message


def risk_limits(daily_loss: str) -> pb.RiskLimits:
    return canonical_limits(
        pb.RiskLimits(
            max_orders_per_second=10,
            max_order_notional=D(value="1000"),
            default_max_position=D(value="5"),
            price_collar_bps=50,
            daily_loss_limit=D(value=daily_loss),
        )
    )


async def test_changes_stored_while_nothing_publishes_are_announced_later_in_order(
    infra_settings: Settings, redis_client: Redis, outbox: RedisOutbox
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    store = RedisRiskStore(redis_client, outbox)
    await store.load_scripts()
    events = RiskEvents(store, relay=None)  # nothing publishes: as if risk died after storing

    assert (await events.set_state(tenant, status(pb.TRADING_STATE_HALTED, "ops halt")))[0] == "changed"
    assert (await events.set_state(tenant, status(pb.TRADING_STATE_HALTED, "again")))[0] == "same"
    first = await events.set_limits(tenant, risk_limits("100"), expected_version=0, actor="ops-1")
    second = await events.set_limits(tenant, risk_limits("200"), expected_version=1, actor="ops-1")
    same = await events.set_limits(tenant, risk_limits("200"), expected_version=0, actor="ops-1")
    assert (first.version, second.version, same.version, same.changed) == (1, 2, 2, False)
    kind, severity = ev.RISK_ALERT_KIND_DAILY_LOSS_WARNING, ev.RISK_ALERT_SEVERITY_WARNING
    assert await events.alert(tenant, kind, severity, "80% of the daily loss")
    assert not await events.alert(tenant, kind, severity, "80% of the daily loss")  # throttled: no row

    # Every change is in the outbox with its event; nothing else is.
    waiting = await stored_events(redis_client, outbox, tenant)
    assert [type(e).__name__ for e in waiting] == [
        "TradingStateChanged",
        "LimitsChanged",
        "LimitsChanged",
        "RiskAlert",
    ]
    halted, limits_v1, limits_v2, _ = waiting
    assert isinstance(halted, ev.TradingStateChanged)
    assert (halted.previous_state, halted.state) == (pb.TRADING_STATE_ACTIVE, pb.TRADING_STATE_HALTED)
    assert isinstance(limits_v1, ev.LimitsChanged) and isinstance(limits_v2, ev.LimitsChanged)
    assert (limits_v1.version, limits_v1.HasField("previous_limits")) == (1, False)
    assert (limits_v2.version, limits_v2.previous_limits.daily_loss_limit.value) == (2, "100")
    assert await outbox.backlog() == 8  # four events, each for Kafka and NATS

    # A relay comes up: the events go out, in the order the changes were made.
    publisher_nc = await connect_nats(infra_settings, "risk")
    try:
        async with (
            received_events(infra_settings, "notification", f"risk.events.{tenant}") as received,
            KafkaPublisher(infra_settings.kafka, event_registry(), client_id="risk-outbox-test") as kafka,
        ):
            relay = OutboxRelay(outbox, kafka=kafka, nats=NatsPublisher(publisher_nc, event_registry()))
            assert await relay.run_once() == 8
            await eventually(lambda: _true(len(received) >= 4), what="the stored events on NATS")
            assert [type(e).__name__ for e in received] == [type(e).__name__ for e in waiting]
        assert await outbox.backlog() == 0
    finally:
        await publisher_nc.close()


async def test_concurrent_switches_each_announce_the_state_they_replaced(
    redis_client: Redis, outbox: RedisOutbox
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    store = RedisRiskStore(redis_client, outbox)
    await store.load_scripts()
    events = RiskEvents(store, relay=None)
    states = [pb.TRADING_STATE_HALTED, pb.TRADING_STATE_REDUCING, pb.TRADING_STATE_ACTIVE] * 6
    outcomes = await asyncio.gather(
        *(events.set_state(tenant, status(s, f"switch {i}")) for i, s in enumerate(states))
    )
    changed = sum(1 for outcome, _ in outcomes if outcome == "changed")

    announced = await stored_events(redis_client, outbox, tenant)
    assert len(announced) == changed > 0
    # One unbroken chain: each event's previous state is the state the one before it set.
    current = int(domain.TradingState.ACTIVE)
    for event in announced:
        assert isinstance(event, ev.TradingStateChanged)
        assert int(event.previous_state) == current and int(event.state) != current
        current = int(event.state)
    stored = await store.get_status(tenant)
    assert stored is not None and stored.state == current


async def _true(value: bool) -> bool:
    return value
