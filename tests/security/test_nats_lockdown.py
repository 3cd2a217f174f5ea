"""NATS locked down, against the real authenticated nats-server of the test
session (tools.infra generates its config from
runtime.security.nats_permissions, as for ``./dev run``).

Every connection here uses a principal's own credentials
(``connect_nats(settings, principal)``), exactly as the services do; the test
harness user is used only to look into a stream or clean up afterwards.

- (a) anonymous connections, wrong passwords and principals without a NATS
  user are refused;
- (b) a forged OrderStatusChanged from any principal but execution is
  refused (permission violation, core and JetStream) and never reaches a
  legitimate subscriber, nor the EXECUTION stream;
- (c) principals that must not read tenant order subjects cannot subscribe
  to them, nor read them through a JetStream consumer; the server refuses
  every subscription and publish the table does not grant;
- (d) each real flow of the platform works end to end with the runtime's
  own publisher, subscriber, streams and dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import nats
import nats.errors
import pytest
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from trading.common.v1 import event_pb2

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging import Event, RetryPolicy, decode_envelope, new_envelope
from runtime.messaging.nats import JetStreamSubscriber, NatsDeadLetters, NatsPublisher, NatsSubscriber
from runtime.messaging.nats.connect import connect_nats
from runtime.messaging.nats.streams import DLQ_SUBJECT_PREFIX, ensure_streams
from runtime.resources import declare_streams
from runtime.security.nats_permissions import (
    EXECUTION_STREAM,
    FEATURE_VECTOR,
    NATS_SECRET,
    NOTIFICATION_STREAM,
    ORDER_STATUS,
    PORTFOLIO_SNAPSHOT,
    POSITION_CHANGED,
    RISK_EVENTS,
    TICK,
    TICK_BATCH,
    allowed,
    nats_users,
    permissions,
    subscribe_form,
)
from runtime.security.principals import OPERATOR, PRINCIPALS
from runtime.security.secrets import get_secret
from services.decision.engine import vector_subject
from services.execution.api import ORDER_UPDATES_SUBJECT
from services.execution.venue import TICKS_SUBJECT
from services.features.consumer import tick_subjects
from services.marketdata.api import tick_subject
from services.notification.api import tenant_subjects
from services.notification.delivery import JOBS_SUBJECT_PREFIX, job_subject, jobs_stream_spec
from services.portfolio.api import update_subjects
from tests.support.nats import connect_harness
from tests.support.polling import eventually

REGISTRY = event_registry()
SIGNAL = "trading.decision.v1.SignalGenerated"
# How long a refused message gets to show up anyway before we call it absent.
QUIET_S = 0.5


# ---------------------------------------------------------------------------- helpers


@dataclass
class Conn:
    """A principal's connection and the asynchronous errors the server sent it."""

    principal: str
    nc: NatsClient
    errors: list[str] = field(default_factory=list)

    async def violations(self, count: int, timeout: float = 5.0) -> list[str]:
        """The permission violations reported so far, once there are `count`."""

        async def enough() -> list[str] | None:
            found = self.permission_errors()
            return found if len(found) >= count else None

        return await eventually(enough, timeout, f"{count} permission violations", interval=0.01)

    def permission_errors(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e]


@contextlib.asynccontextmanager
async def connected(settings: Settings, principal: str) -> AsyncIterator[Conn]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())  # nats-py lower-cases the server's text

    nc = await connect_nats(settings, principal, error_cb=on_error, connect_timeout=2, allow_reconnect=False)
    conn = Conn(principal, nc, errors)
    try:
        yield conn
    finally:
        await nc.close()


class Inbox:
    """Messages of a raw subscription, decoded."""

    def __init__(self) -> None:
        self.envelopes: list[event_pb2.EventEnvelope] = []
        self.subjects: list[str] = []

    async def on_msg(self, msg: Msg) -> None:
        self.subjects.append(msg.subject)
        self.envelopes.append(decode_envelope(msg.data))

    def ids(self) -> list[str]:
        return [e.event_id for e in self.envelopes]


class Handled:
    """A NatsSubscriber handler that records events (optionally failing first)."""

    def __init__(self, accept: Callable[[Event], bool] = lambda e: True, fail_first: int = 0) -> None:
        self.events: list[Event] = []
        self._accept = accept
        self._fail = fail_first

    async def __call__(self, event: Event) -> None:
        if not self._accept(event):
            return
        if self._fail > 0:
            self._fail -= 1
            raise RuntimeError("handler fails on purpose")
        self.events.append(event)

    def ids(self) -> list[str]:
        return [e.envelope.event_id for e in self.events]


async def until(predicate: Callable[[], bool], what: str | Callable[[], str], timeout: float = 10.0) -> None:
    """Wait for ``predicate``; ``what`` names it (a callable: described as it stands at the deadline)."""

    async def probe() -> bool:
        return predicate()

    await eventually(probe, timeout, what, interval=0.01)


def token() -> str:
    return uuid.uuid4().hex[:10]


def event(event_type: str, tenant: str = "", **fields: object) -> tuple[event_pb2.EventEnvelope, Message]:
    """An envelope of `event_type` with the payload fields its subject needs."""
    payload = REGISTRY.message_class(event_type)(**fields)
    envelope = new_envelope(
        payload, tenant_id=tenant, correlation_id=f"sec-{token()}", producer="tests.security"
    )
    return envelope, payload


def concrete(template_or_subject: str) -> str:
    """A subject of a template with unique tokens in its placeholders."""
    subject = subscribe_form(template_or_subject)
    return ".".join(token() if t in ("*", ">") else t for t in subject.split("."))


async def no_error(*conns: Conn) -> None:
    """None of `conns` got an error from the server (a PING round trip first)."""
    for conn in conns:
        await conn.nc.flush()
    assert [(c.principal, c.errors) for c in conns if c.errors] == []


# ---------------------------------------------------------------------------- (a) authentication


async def _refused(url: str, **credentials: str) -> nats.errors.Error:
    async def quiet(exc: Exception) -> None:
        pass

    with pytest.raises(nats.errors.Error) as refused:
        nc = await nats.connect(
            url,
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
            **credentials,
        )
        await nc.close()
    return refused.value


async def test_an_anonymous_connection_is_refused(infra_settings: Settings) -> None:
    error = await _refused(infra_settings.nats.url)
    assert "authorization violation" in str(error).lower()


@pytest.mark.parametrize("principal", ["execution", "notification", OPERATOR])
async def test_a_wrong_password_is_refused(infra_settings: Settings, principal: str) -> None:
    real = get_secret(infra_settings, NATS_SECRET, principal)
    error = await _refused(infra_settings.nats.url, user=principal, password=real + "x")
    assert "authorization violation" in str(error).lower()
    # Another principal's (valid) password is a wrong password too.
    other = get_secret(infra_settings, NATS_SECRET, "features")
    await _refused(infra_settings.nats.url, user=principal, password=other)


@pytest.mark.parametrize("principal", [p for p in PRINCIPALS if p not in nats_users()])
async def test_a_principal_without_a_nats_user_is_refused_even_with_its_secret(
    infra_settings: Settings, principal: str
) -> None:
    # The gateway, identity and audit never use NATS: no user.
    password = get_secret(infra_settings, NATS_SECRET, principal)
    await _refused(infra_settings.nats.url, user=principal, password=password)


@pytest.mark.parametrize("principal", nats_users())
async def test_each_principal_connects_with_its_own_credentials(
    infra_settings: Settings, principal: str
) -> None:
    async with connected(infra_settings, principal) as conn:
        await no_error(conn)
        assert conn.nc.is_connected


# ---------------------------------------------------------------------------- (b) forged events


FORGERS = [p for p in nats_users() if p not in ("execution", OPERATOR)]


@pytest.mark.parametrize("forger", FORGERS)
async def test_a_forged_order_update_is_refused_and_never_reaches_a_subscriber(
    infra_settings: Settings, forger: str
) -> None:
    tenant, symbol = f"t{token()}", f"S{token()}"
    subject = ORDER_UPDATES_SUBJECT.format(tenant=tenant, symbol=symbol)
    seen = Inbox()
    async with (
        connected(infra_settings, "notification") as reader,
        connected(infra_settings, forger) as bad,
        connected(infra_settings, "execution") as good,
    ):
        # The legitimate readers of the tenant's order updates: notification's
        # Subscribe (what the gateway's SSE stream relays) and execution's
        # StreamOrderUpdates, both on the tenant's subjects.
        await reader.nc.subscribe(f"execution.orders.{tenant}.*", cb=seen.on_msg)
        await reader.nc.flush()

        forged, payload = event(ORDER_STATUS, tenant, symbol=symbol, order_id=f"forged-{token()}")
        publisher = NatsPublisher(bad.nc, REGISTRY, js_timeout_s=1.0)
        assert publisher.destination_of(forged, payload) == subject
        # Core NATS: no error at the call, a permission violation from the server.
        await publisher.publish(forged, payload=payload, durable=False)
        await bad.nc.flush()
        # JetStream (how execution's relay publishes): no stream ack ever comes.
        with pytest.raises(nats.errors.TimeoutError):
            await publisher.publish(forged, payload=payload, durable=True)
        violations = await bad.violations(2)
        assert violations == [f'nats: permissions violation for publish to "{subject.lower()}"'] * 2

        # The real publisher's update does arrive: the subscriber was listening.
        await declare_streams(good.nc, "execution")
        real, real_payload = event(ORDER_STATUS, tenant, symbol=symbol, order_id=f"real-{token()}")
        await NatsPublisher(good.nc, REGISTRY).publish(real, payload=real_payload)
        await until(lambda: len(seen.envelopes) >= 1, "the real order update")
        await asyncio.sleep(QUIET_S)
        assert seen.ids() == [real.event_id]
        await no_error(reader, good)

    # The stream holds the real update only.
    harness = await connect_harness(infra_settings)
    try:
        info = await harness.jetstream().stream_info(EXECUTION_STREAM, subjects_filter=subject)
        assert info.state.subjects == {subject: 1}
        last = await harness.jetstream().get_last_msg(EXECUTION_STREAM, subject)
        assert decode_envelope(last.data or b"").event_id == real.event_id
    finally:
        await harness.close()


@pytest.mark.parametrize("principal", nats_users())
async def test_the_server_refuses_every_event_publish_the_table_does_not_grant(
    infra_settings: Settings, principal: str
) -> None:
    """Each event subject (and some platform internals) that ``principal``
    may not publish is refused by the running server."""
    perms = permissions(principal)
    candidates = [concrete(t) for t in REGISTRY.nats_subject_templates()]
    candidates += [
        concrete("notification.webhooks.*.*"),
        DLQ_SUBJECT_PREFIX + "someone-else",
        f"$JS.API.STREAM.DELETE.{EXECUTION_STREAM}",
        f"$JS.API.STREAM.PURGE.{EXECUTION_STREAM}",
        f"$JS.API.STREAM.UPDATE.{EXECUTION_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{EXECUTION_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{EXECUTION_STREAM}",
        "$JS.API.STREAM.LIST",
        f"_INBOX.{'notification' if principal != 'notification' else 'execution'}.{token()}",
    ]
    refused = sorted({s for s in candidates if not allowed(perms.publish, s)})
    assert refused, principal
    async with connected(infra_settings, principal) as conn:
        for subject in refused:
            await conn.nc.publish(subject, b"")
        await conn.nc.flush()
        violations = await conn.violations(len(refused))
    assert sorted(violations) == sorted(
        f'nats: permissions violation for publish to "{s.lower()}"' for s in refused
    )


# ---------------------------------------------------------------------------- (c) reading others' subjects


NOT_ORDER_READERS = [p for p in nats_users() if p not in ("execution", "notification")]


@pytest.mark.parametrize("principal", NOT_ORDER_READERS)
async def test_no_subscription_to_tenant_order_subjects_outside_execution_and_notification(
    infra_settings: Settings, principal: str
) -> None:
    tenant, symbol = f"t{token()}", f"S{token()}"
    attempts = [
        "execution.orders.>",
        f"execution.orders.{tenant}.*",
        f"execution.orders.{tenant}.{symbol}",
        "execution.>",
        ">",
        "_INBOX.>",
        "_INBOX.notification.>",
    ]
    got = Inbox()
    async with (
        connected(infra_settings, principal) as snoop,
        connected(infra_settings, "execution") as good,
        connected(infra_settings, "notification") as reader,
    ):
        for subject in attempts:
            await snoop.nc.subscribe(subject, cb=got.on_msg)
        await snoop.nc.flush()
        violations = await snoop.violations(len(attempts))
        assert sorted(violations) == sorted(
            f'nats: permissions violation for subscription to "{s.lower()}"' for s in attempts
        )
        # A real update flows (notification sees it); the refused subscriber does not.
        seen = Inbox()
        await reader.nc.subscribe(f"execution.orders.{tenant}.*", cb=seen.on_msg)
        await reader.nc.flush()
        await declare_streams(good.nc, "execution")
        real, payload = event(ORDER_STATUS, tenant, symbol=symbol, order_id=token())
        await NatsPublisher(good.nc, REGISTRY).publish(real, payload=payload)
        await until(lambda: seen.ids() == [real.event_id], "the update at notification")
        await asyncio.sleep(QUIET_S)
        assert got.envelopes == []

        # Nor through JetStream: creating a consumer on the order stream is refused.
        js = snoop.nc.jetstream(timeout=1.0)
        with pytest.raises(nats.errors.Error):
            await js.pull_subscribe(f"execution.orders.{tenant}.*", durable=None, stream=EXECUTION_STREAM)
        with pytest.raises(nats.errors.Error):
            await js.get_last_msg(EXECUTION_STREAM, f"execution.orders.{tenant}.{symbol}")
        await no_error(good, reader)


@pytest.mark.parametrize("principal", nats_users())
async def test_the_server_refuses_every_event_subscription_the_table_does_not_grant(
    infra_settings: Settings, principal: str
) -> None:
    perms = permissions(principal)
    subjects = sorted({subscribe_form(t) for t in REGISTRY.nats_subject_templates()})
    subjects += [JOBS_SUBJECT_PREFIX + ">", DLQ_SUBJECT_PREFIX + ">"]
    refused = [s for s in subjects if not allowed(perms.subscribe, s)]
    granted = [s for s in subjects if allowed(perms.subscribe, s)]
    async with connected(infra_settings, principal) as conn:
        for subject in subjects:
            await conn.nc.subscribe(subject)
        await conn.nc.flush()
        violations = await conn.violations(len(refused)) if refused else []
        await asyncio.sleep(0.1)  # nothing else comes
        assert sorted(conn.permission_errors()) == sorted(
            f'nats: permissions violation for subscription to "{s.lower()}"' for s in refused
        )
    assert len(violations) == len(refused)
    # What the table grants really is what the code needs (the unit tests
    # check the code's subjects against the same table).
    assert all(allowed(perms.subscribe, s) for s in granted)


# ---------------------------------------------------------------------------- (d) the real flows


async def test_ticks_flow_to_features_execution_and_quote_streams(infra_settings: Settings) -> None:
    symbol = f"S{token()}"
    features_got = Handled(lambda e: e.payload.ticks[0].symbol == symbol)  # type: ignore[attr-defined]
    venue_got, quotes_got = Inbox(), Inbox()
    async with (
        connected(infra_settings, "marketdata") as md,
        connected(infra_settings, "features") as ft,
        connected(infra_settings, "execution") as ex,
    ):
        await declare_streams(ft.nc, "features")
        subscriber = NatsSubscriber(
            ft.nc, REGISTRY, features_got, subjects=tick_subjects(), name="features-tickbatches"
        )
        async with subscriber:
            await ex.nc.subscribe(TICKS_SUBJECT, cb=venue_got.on_msg)  # the paper venue
            await md.nc.subscribe(tick_subject(symbol), cb=quotes_got.on_msg)  # StreamQuotes
            await asyncio.gather(ft.nc.flush(), ex.nc.flush(), md.nc.flush())
            tick, payload = event(TICK, symbol=symbol, sequence=1)
            batch, ticks = event(TICK_BATCH, partition=3, partition_count=16, ticks=[payload])
            await NatsPublisher(md.nc, REGISTRY).publish_many([(tick, payload), (batch, ticks)])
            await until(lambda: features_got.ids() == [batch.event_id], "the tick batch at features")
            await until(lambda: tick.event_id in venue_got.ids(), "the tick at the venue")
            await until(lambda: quotes_got.ids() == [tick.event_id], "the tick at StreamQuotes")
        await no_error(md, ft, ex)


async def test_feature_vectors_flow_to_decision_and_signals_go_out(infra_settings: Settings) -> None:
    symbol, tenant = f"S{token()}", f"t{token()}"
    decision_got = Handled()
    async with (
        connected(infra_settings, "features") as ft,
        connected(infra_settings, "decision") as dc,
    ):
        await declare_streams(dc.nc, "decision")
        subscriber = NatsSubscriber(
            dc.nc, REGISTRY, decision_got, subjects=["features.vectors.*"], queue=f"q{token()}",
            name="decision-vectors",
        )  # fmt: skip
        await subscriber.follow([vector_subject(symbol)])
        try:
            vector, payload = event(FEATURE_VECTOR, symbol=symbol)
            await NatsPublisher(ft.nc, REGISTRY).publish(vector, payload=payload)
            await until(lambda: decision_got.ids() == [vector.event_id], "the vector at decision")
        finally:
            await subscriber.stop()
        # Signals: published by decision (nobody reads them on NATS today).
        harness = await connect_harness(infra_settings)
        try:
            signals = Inbox()
            await harness.subscribe(f"decision.signals.{tenant}.>", cb=signals.on_msg)
            await harness.flush()
            signal, signal_payload = event(SIGNAL, tenant, symbol=symbol)
            await NatsPublisher(dc.nc, REGISTRY).publish(signal, payload=signal_payload)
            await until(
                lambda: signals.ids() == [signal.event_id],
                lambda: f"the signal {signal.event_id} alone; received {signals.subjects} {signals.ids()}",
            )
        finally:
            await harness.close()
        await no_error(ft, dc)


async def test_risk_and_portfolio_events_reach_notification_and_portfolio_streams(
    infra_settings: Settings,
) -> None:
    tenant = f"t{token()}"
    at_notification, at_portfolio = Inbox(), Inbox()
    async with (
        connected(infra_settings, "risk") as rk,
        connected(infra_settings, "portfolio") as pf,
        connected(infra_settings, "notification") as nt,
    ):
        for subject in tenant_subjects(tenant):  # notification's Subscribe
            await nt.nc.subscribe(subject, cb=at_notification.on_msg)
        for subject in update_subjects(tenant):  # portfolio's StreamPortfolio
            await pf.nc.subscribe(subject, cb=at_portfolio.on_msg)
        await asyncio.gather(nt.nc.flush(), pf.nc.flush())
        sent: dict[str, str] = {}
        for event_type in RISK_EVENTS:
            envelope, payload = event(event_type, tenant)
            await NatsPublisher(rk.nc, REGISTRY).publish(envelope, payload=payload)
            sent[envelope.event_id] = event_type
        for event_type in (POSITION_CHANGED, PORTFOLIO_SNAPSHOT):
            envelope, payload = event(event_type, tenant)
            await NatsPublisher(pf.nc, REGISTRY).publish(envelope, payload=payload)
            sent[envelope.event_id] = event_type
        delivered = {
            i for i, t in sent.items() if t != PORTFOLIO_SNAPSHOT
        }  # notification delivers no snapshots
        wakes = {i for i, t in sent.items() if t in (POSITION_CHANGED, PORTFOLIO_SNAPSHOT)}
        await until(
            lambda: set(at_notification.ids()) == delivered, "risk and position events at notification"
        )
        await until(lambda: set(at_portfolio.ids()) == wakes, "position and snapshot at portfolio")
        await no_error(rk, pf, nt)


async def test_order_updates_flow_through_the_stream_to_notification_and_execution_streams(
    infra_settings: Settings,
) -> None:
    tenant, symbol = f"t{token()}", f"S{token()}"
    durable_got = Handled()
    live_notification, live_execution = Inbox(), Inbox()
    durable = f"notification-orders-{token()}"
    async with (
        connected(infra_settings, "execution") as ex,
        connected(infra_settings, "notification") as nt,
    ):
        # Whichever starts first creates the stream; notification may only create it.
        await declare_streams(nt.nc, "notification")
        await declare_streams(ex.nc, "execution")
        subscriber = JetStreamSubscriber(
            nt.nc, REGISTRY, durable_got, subjects=[f"execution.orders.{tenant}.*"], durable=durable,
            retry=RetryPolicy(max_attempts=2),
        )  # fmt: skip
        try:
            async with subscriber:
                await nt.nc.subscribe(f"execution.orders.{tenant}.*", cb=live_notification.on_msg)
                await ex.nc.subscribe(
                    ORDER_UPDATES_SUBJECT.format(tenant=tenant, symbol="*"), cb=live_execution.on_msg
                )
                await asyncio.gather(nt.nc.flush(), ex.nc.flush())
                update, payload = event(ORDER_STATUS, tenant, symbol=symbol, order_id=token())
                await NatsPublisher(ex.nc, REGISTRY).publish(update, payload=payload)  # JetStream
                await until(lambda: durable_got.ids() == [update.event_id], "the update at the durable")
                await until(lambda: live_notification.ids() == [update.event_id], "at Subscribe")
                await until(lambda: live_execution.ids() == [update.event_id], "at StreamOrderUpdates")
                assert durable_got.events[0].delivery.stream == EXECUTION_STREAM
            await no_error(ex, nt)
        finally:
            await _delete_consumer(infra_settings, EXECUTION_STREAM, durable)


async def test_webhook_jobs_flow_through_notifications_own_stream(infra_settings: Settings) -> None:
    tenant, webhook = f"t{token()}", f"w{token()}"
    got = Handled()
    durable = f"notification-webhooks-{token()}"
    async with connected(infra_settings, "notification") as nt:
        js = nt.nc.jetstream()
        await ensure_streams(js, [jobs_stream_spec()])
        subscriber = JetStreamSubscriber(
            nt.nc, REGISTRY, got, subjects=[f"{JOBS_SUBJECT_PREFIX}{tenant}.>"], durable=durable,
            stream=NOTIFICATION_STREAM,
        )  # fmt: skip
        try:
            async with subscriber:
                envelope, _ = event(ORDER_STATUS, tenant, symbol="X", order_id=token())
                await js.publish(
                    job_subject(tenant, webhook), envelope.SerializeToString(), stream=NOTIFICATION_STREAM
                )
                await until(lambda: got.ids() == [envelope.event_id], "the job at the worker")
            await no_error(nt)
        finally:
            await _delete_consumer(infra_settings, NOTIFICATION_STREAM, durable)


async def test_a_dead_letter_is_listed_and_re_driven_by_the_operator(infra_settings: Settings) -> None:
    """features dead-letters a tick batch its handler failed on; the operator
    (tradingctl deadletters) lists it and sends it back; features gets it."""
    symbol = f"S{token()}"
    handled = Handled(lambda e: e.payload.ticks[0].symbol == symbol, fail_first=1)  # type: ignore[attr-defined]
    async with (
        connected(infra_settings, "marketdata") as md,
        connected(infra_settings, "features") as ft,
        connected(infra_settings, OPERATOR) as op,
    ):
        await declare_streams(ft.nc, "features")
        subscriber = NatsSubscriber(
            ft.nc, REGISTRY, handled, subjects=tick_subjects(), name="features-tickbatches",
            retry=RetryPolicy(max_attempts=1),
        )  # fmt: skip
        async with subscriber:
            await ft.nc.flush()
            tick, payload = event(
                TICK_BATCH,
                partition=3,
                partition_count=16,
                ticks=[REGISTRY.message_class(TICK)(symbol=symbol)],
            )
            await NatsPublisher(md.nc, REGISTRY).publish(tick, payload=payload)
            dead = NatsDeadLetters(NatsPublisher(op.nc, REGISTRY))

            async def letters() -> list[str]:
                return [
                    d.id
                    for d in await dead.list("features-tickbatches")
                    if d.headers.get("x-event-id") == tick.event_id
                ]

            found = await eventually(letters, 10, "the dead letter", interval=0.05)
            assert handled.events == []
            await dead.redrive(found[0])
            await dead.delete(found[0])
            await until(lambda: handled.ids() == [tick.event_id], "the re-driven batch at features")
            assert await letters() == []
        await no_error(md, ft, op)


async def _delete_consumer(settings: Settings, stream: str, durable: str) -> None:
    """Clean-up (the harness: no service may delete consumers)."""
    harness = await connect_harness(settings)
    try:
        with contextlib.suppress(NotFoundError, nats.errors.Error):
            await harness.jetstream().delete_consumer(stream, durable)
    finally:
        await harness.close()
