"""The notification service on real servers: events published on NATS
JetStream (order updates), core NATS and Kafka (risk, portfolio) with the
platform's publishers; webhooks in PostgreSQL; deliveries POSTed to a real
HTTP receiver on loopback (stdlib http.server in a thread) that verifies
every signature; dead letters in PostgreSQL and the NATS DLQ stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import asyncpg
import grpc
import nats
import nats.errors
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from nats.aio.client import Client as NatsClient
from trading.common.v1 import decimal_pb2, event_pb2, market_pb2, types_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.notification.v1 import events_pb2 as nevents
from trading.notification.v1 import notification_service_pb2 as pb
from trading.notification.v1 import notification_service_pb2_grpc as pb_grpc
from trading.notification.v1 import types_pb2 as ntypes
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.risk.v1 import events_pb2 as risk_events
from trading.risk.v1 import risk_service_pb2 as risk_types

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging import Delivery, Event, Transport, new_envelope, uuid7
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber
from runtime.messaging.nats import NatsPublisher
from runtime.messaging.nats.deadletter import NatsDeadLetters
from runtime.messaging.testing import EventCollector
from runtime.resources import Resources
from services.notification.adapters.nats import JetStreamDeliveryJobs
from services.notification.adapters.postgres import PostgresWebhookStore
from services.notification.api import NotificationApi
from services.notification.delivery import FanOut
from services.notification.main import NOTIFICATION_SERVICE, ConsumerNames, make_spec
from services.notification.settings import NotificationSettings
from tests.support.nats import connect_harness
from tests.support.polling import eventually
from tests.support.security import service_channel, user_md
from tests.support.services import running_service
from tools import deadletters

pytestmark = pytest.mark.integration

T = TypeVar("T")

# Quick retries so a failing delivery dead-letters within a second.
ATTEMPTS = 3
LENIENT = NotificationSettings(
    allow_insecure_http=True,
    allow_private_targets=True,
    delivery_attempts=ATTEMPTS,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    backoff_jitter_s=0.05,
    attempt_timeout_s=2.0,
    delivery_workers=4,
)


# ---------------------------------------------------------------------------- receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.perf_counter)  # when it arrived


@dataclass
class Receiver:
    """A webhook endpoint: answers with `status` (settable), records requests."""

    status: int = 200
    delay_s: float = 0.0  # answer this late
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/in"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.received()) < count:  # noqa: ASYNC110 - a server thread: nothing to await on
                await asyncio.sleep(0.02)
        return self.received()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                status, delay = state.status, state.delay_s
                state.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                )
            time.sleep(delay)
            # A client that timed out has gone away: nothing to answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.server.shutdown()
    state.server.server_close()


def verify(secret: str, request: Received, *, tolerance_s: float = 300) -> dict[str, Any]:
    """What a receiver does (Standard Webhooks), written apart from the service's code."""
    message_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) < tolerance_s, "stale timestamp"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + request.body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    assert hmac.compare_digest(expected, request.headers["webhook-signature"]), "bad signature"
    document: dict[str, Any] = json.loads(request.body)
    assert document["eventId"] == message_id
    return document


# ---------------------------------------------------------------------------- service


@dataclass
class Harness:
    stub: pb_grpc.NotificationServiceAsyncStub
    strict: pb_grpc.NotificationServiceAsyncStub  # default target policy, API only
    api: NotificationApi
    names: ConsumerNames
    nc: NatsClient
    nats_publisher: NatsPublisher
    kafka: KafkaPublisher


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def notification(infra_settings: Settings) -> AsyncIterator[Harness]:
    suffix = uuid.uuid4().hex[:8]
    names = ConsumerNames(
        orders_durable=f"notification-orders-{suffix}",
        events_group=f"notification.events.test-{suffix}",
        webhooks_durable=f"notification-webhooks-{suffix}",
    )
    spec = make_spec(settings=LENIENT, names=names)
    built: dict[str, Any] = {}

    async def build(resources: Resources) -> Mapping[str, Any]:
        built.update(await spec.build(resources))
        return built

    strict_spec = make_spec(settings=NotificationSettings(run_consumers=False), names=names)
    nc = await connect_harness(infra_settings, name="test-notification")
    try:
        async with (
            running_service(dataclasses.replace(spec, build=build), infra_settings) as address,
            running_service(strict_spec, infra_settings) as strict_address,
            service_channel(address, "notification") as channel,
            service_channel(strict_address, "notification") as strict_channel,
            KafkaPublisher(infra_settings.kafka, event_registry(), client_id="test-notification") as kafka,
        ):
            api: NotificationApi = built[NOTIFICATION_SERVICE]
            await api.events_subscriber.wait_assigned()
            yield Harness(
                pb_grpc.NotificationServiceStub(channel),
                pb_grpc.NotificationServiceStub(strict_channel),
                api,
                names,
                nc,
                NatsPublisher(nc, event_registry()),
                kafka,
            )
    finally:
        # Durable consumers outlive their subscribers: remove this module's.
        js = nc.jetstream()
        for stream, durable in (
            ("EXECUTION", names.orders_durable),
            ("NOTIFICATION", names.webhooks_durable),
        ):
            with contextlib.suppress(nats.errors.Error):
                await js.delete_consumer(stream, durable)
        await nc.drain()


def md(tenant: str) -> tuple[tuple[str, str], ...]:
    return user_md("notification", tenant)


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------- events


def order_update(tenant: str, *, filled: bool = True) -> tuple[event_pb2.EventEnvelope, Message]:
    """An OrderStatusChanged as execution emits it (FILLED, with its fill)."""
    order_id = str(uuid7())
    status = execution_types.ORDER_STATUS_FILLED if filled else execution_types.ORDER_STATUS_ACCEPTED
    order = execution_types.Order(
        order_id=order_id,
        client_order_id=f"c-{order_id[-8:]}",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        type=market_pb2.ORDER_TYPE_MARKET,
        quantity=decimal_pb2.Decimal(value="0.5"),
        status=status,
        version=2,
    )
    payload = execution_events.OrderStatusChanged(
        order_id=order_id,
        symbol="BTC-USD",
        order=order,
        previous_status=execution_types.ORDER_STATUS_ACCEPTED,
    )
    if filled:
        payload.fill.CopyFrom(
            execution_types.Fill(
                execution_id=str(uuid7()),
                order_id=order_id,
                symbol="BTC-USD",
                side=types_pb2.SIDE_BUY,
                quantity=decimal_pb2.Decimal(value="0.5"),
                price=decimal_pb2.Decimal(value="64210.50"),
            )
        )
    envelope = new_envelope(
        payload, tenant_id=tenant, correlation_id=f"corr-{order_id[-6:]}", producer="execution"
    )
    return envelope, payload


def trading_halted(tenant: str) -> tuple[event_pb2.EventEnvelope, Message]:
    payload = risk_events.TradingStateChanged(
        previous_state=risk_types.TRADING_STATE_ACTIVE,
        state=risk_types.TRADING_STATE_HALTED,
        reason="kill switch",
    )
    payload.changed_at.GetCurrentTime()
    return new_envelope(payload, tenant_id=tenant, correlation_id="corr-halt", producer="risk"), payload


def position_opened(tenant: str) -> tuple[event_pb2.EventEnvelope, Message]:
    payload = portfolio_events.PositionChanged(
        symbol="BTC-USD",
        previous_quantity=decimal_pb2.Decimal(value="0"),
        execution_id=str(uuid7()),
        order_id=str(uuid7()),
    )
    payload.position.symbol = "BTC-USD"
    payload.position.quantity.value = "0.5"
    payload.realized_pnl_change.currency = "USD"
    payload.realized_pnl_change.amount.value = "0"
    return new_envelope(payload, tenant_id=tenant, correlation_id="corr-pos", producer="portfolio"), payload


async def publish(h: Harness, event: tuple[event_pb2.EventEnvelope, Message]) -> None:
    """As the producers do: NATS (JetStream for order updates, core for the
    others), and Kafka for the event types that have a topic."""
    envelope, payload = event
    await h.nats_publisher.publish(envelope, payload=payload)
    await h.nc.flush()
    if event_registry().route(envelope.event_type).kafka_topic:
        await h.kafka.publish(envelope, payload=payload)


async def register(
    h: Harness, tenant: str, url: str, event_types: tuple[str, ...] = ()
) -> pb.RegisterWebhookResponse:
    response: pb.RegisterWebhookResponse = await h.stub.RegisterWebhook(
        pb.RegisterWebhookRequest(url=url, event_types=list(event_types), description="test"),
        metadata=md(tenant),
    )
    return response


async def dead_letters(h: Harness, tenant: str, webhook_id: str = "") -> list[ntypes.DeadLetter]:
    response = await h.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(webhook_id=webhook_id), metadata=md(tenant)
    )
    return list(response.dead_letters)


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """field -> reason of the BadRequest detail."""
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    status = status_pb2.Status.FromString(raw)
    found: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.reason for v in bad.field_violations})
    return found


# ---------------------------------------------------------------------------- webhooks


async def test_signed_delivery_retried_dead_lettered_then_redriven(
    notification: Harness, receiver: Receiver, infra_settings: Settings
) -> None:
    h, tenant = notification, new_tenant()
    outcomes = EventCollector()
    reports = KafkaSubscriber(
        infra_settings.kafka,
        event_registry(),
        outcomes,
        group=f"test-deliveries-{uuid.uuid4().hex[:8]}",
        dead_letters=notification.kafka,
        topics=["trading.notification.deliveries"],
    )
    await reports.start()
    try:
        await reports.wait_assigned()
        await _deliver_fail_redrive(h, tenant, receiver, outcomes)
    finally:
        await reports.stop()


async def _report_of(outcomes: EventCollector, webhook_id: str) -> Message:
    while True:
        event = await outcomes.next(timeout=20)
        if getattr(event.payload, "webhook_id", "") == webhook_id:
            return event.payload


async def _deliver_fail_redrive(
    h: Harness, tenant: str, receiver: Receiver, outcomes: EventCollector
) -> None:
    registered = await register(h, tenant, receiver.url, ("trading.execution.v1.OrderStatusChanged",))
    secret, webhook = registered.signing_secret, registered.webhook
    assert secret.startswith("whsec_") and webhook.secret_prefix == secret[:10]
    # The secret is shown once: listings never carry it.
    listed = await h.stub.ListWebhooks(pb.ListWebhooksRequest(), metadata=md(tenant))
    assert [w.webhook_id for w in listed.webhooks] == [webhook.webhook_id]
    assert secret not in str(listed)

    receiver.status = 500
    envelope, payload = order_update(tenant)
    await publish(h, (envelope, payload))
    failed = await receiver.wait_for(ATTEMPTS)
    letters = await eventually(lambda: dead_letters(h, tenant))
    (letter,) = letters
    assert (letter.webhook_id, letter.event_id, letter.url) == (
        webhook.webhook_id,
        envelope.event_id,
        receiver.url,
    )
    assert (letter.attempts, letter.last_http_status, letter.last_error) == (ATTEMPTS, 500, "HTTP 500: ok")
    assert letter.first_attempt_at.ToDatetime() <= letter.last_attempt_at.ToDatetime()
    # Every attempt was signed, with the event id as webhook-id (same on each retry).
    assert len(failed) == ATTEMPTS
    for attempt in failed:
        assert attempt.path == "/hooks/in"
        verify(secret, attempt)
    await asyncio.sleep(0.3)
    assert len(receiver.received()) == ATTEMPTS  # no attempt after the last one

    receiver.status = 200
    redriven = await h.stub.RedriveDeadLetter(
        pb.RedriveDeadLetterRequest(dead_letter_id=letter.dead_letter_id), metadata=md(tenant)
    )
    assert uuid.UUID(redriven.delivery_id).version == 7
    (*_, delivered) = await receiver.wait_for(ATTEMPTS + 1)
    document = verify(secret, delivered)
    assert document["eventType"] == "trading.execution.v1.OrderStatusChanged"
    assert document["tenantId"] == tenant and document["correlationId"] == envelope.correlation_id
    assert document["payload"]["@type"] == "type.googleapis.com/trading.execution.v1.OrderStatusChanged"
    assert document["payload"]["fill"]["price"]["value"] == "64210.50"
    assert await dead_letters(h, tenant) == []
    # The outcomes, on Kafka: the failure (with its dead letter), then the redrive's success.
    failed_report = await _report_of(outcomes, webhook.webhook_id)
    assert isinstance(failed_report, nevents.WebhookDeliveryFailed)
    assert failed_report.dead_letter.dead_letter_id == letter.dead_letter_id
    delivered_report = await _report_of(outcomes, webhook.webhook_id)
    assert isinstance(delivered_report, nevents.WebhookDelivered)
    assert (delivered_report.delivery_id, delivered_report.attempts, delivered_report.http_status) == (
        redriven.delivery_id,
        1,
        200,
    )
    assert delivered_report.delivery_id != failed_report.delivery_id
    # Redriven again: it is gone.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.stub.RedriveDeadLetter(
            pb.RedriveDeadLetterRequest(dead_letter_id=letter.dead_letter_id), metadata=md(tenant)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # ... and so is its copy in the platform DLQ.
    cli_view = await NatsDeadLetters(NatsPublisher(h.nc, event_registry())).list(h.names.webhooks_durable)
    assert envelope.event_id not in {d.headers.get("x-event-id") for d in cli_view}


async def test_cli_lists_and_redrives_webhook_dead_letters(
    notification: Harness, receiver: Receiver, infra_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    h, tenant = notification, new_tenant()
    registered = await register(h, tenant, receiver.url)
    receiver.status = 503
    envelope, payload = trading_halted(tenant)
    await publish(h, (envelope, payload))  # risk events reach webhooks through Kafka
    (letter,) = await eventually(lambda: dead_letters(h, tenant))
    assert letter.last_http_status == 503 and letter.event_type == "trading.risk.v1.TradingStateChanged"

    consumer = h.names.webhooks_durable
    listed = await asyncio.to_thread(
        deadletters.main, ["list", "--transport", "nats", "--consumer", consumer], infra_settings
    )
    out = capsys.readouterr().out
    assert listed == 0
    entry = next(
        line for line in out.splitlines() if line.startswith("nats ") and f"consumer={consumer}" in line
    )
    assert f"attempts={ATTEMPTS}" in entry and "reason=handler_failed" in out and "HTTP 503" in out
    dlq_id = entry.split()[1]

    receiver.status = 200
    redriven = await asyncio.to_thread(
        deadletters.main, ["redrive", dlq_id, "--transport", "nats", "--delete"], infra_settings
    )
    assert redriven == 0
    (*_, delivered) = await receiver.wait_for(ATTEMPTS + 1)
    assert verify(registered.signing_secret, delivered)["eventId"] == envelope.event_id
    # The redriven job names its dead letter: the RPC view is cleared too.
    await eventually(lambda: _empty(dead_letters(h, tenant)))
    letters = NatsDeadLetters(NatsPublisher(h.nc, event_registry()))
    assert all(d.id != dlq_id for d in await letters.list(consumer))


async def _empty(listing: Awaitable[list[ntypes.DeadLetter]]) -> bool:
    return not await listing


async def test_risk_and_portfolio_events_reach_webhooks_through_kafka(
    notification: Harness, receiver: Receiver
) -> None:
    h, tenant = notification, new_tenant()
    registered = await register(h, tenant, receiver.url, ("trading.portfolio.v1.PositionChanged",))
    for event in (trading_halted(tenant), position_opened(tenant)):
        await h.kafka.publish(event[0], payload=event[1])  # Kafka only: no NATS copy needed
    (delivered,) = await receiver.wait_for(1)
    document = verify(registered.signing_secret, delivered)
    assert document["eventType"] == "trading.portfolio.v1.PositionChanged"  # not subscribed to risk
    await asyncio.sleep(0.5)
    assert len(receiver.received()) == 1


class CountingJobs(JetStreamDeliveryJobs):
    """The real job publisher, counting the jobs it is asked to publish."""

    def __init__(self, js: Any) -> None:
        super().__init__(js)
        self.published = 0

    async def publish(self, *args: Any, **kwargs: Any) -> str:
        self.published += 1
        return await super().publish(*args, **kwargs)


async def test_an_event_seen_again_after_the_duplicate_window_makes_no_second_job(
    notification: Harness, receiver: Receiver, pg_pool: asyncpg.Pool
) -> None:
    """Producers publish at least once (their outbox relays); JetStream drops a
    copy within two minutes by job id, and the fan-out's record of event ids
    drops one that comes later."""
    h, tenant = notification, new_tenant()
    position = "trading.portfolio.v1.PositionChanged"
    await register(h, tenant, receiver.url, (position,))
    envelope, payload = position_opened(tenant)
    await h.kafka.publish(envelope, payload=payload)
    await receiver.wait_for(1)
    store = PostgresWebhookStore(pg_pool)

    async def recorded() -> bool:
        return await store.webhooks_for(tenant, position, event_id=envelope.event_id) == []

    await eventually(recorded, what="the event id recorded after its jobs were published")
    assert len(await store.webhooks_for(tenant, position, event_id=str(uuid7()))) == 1  # another event: yes

    # The same event handled again (a redelivery long after the first): no job at all,
    # so nothing depends on JetStream's duplicate window.
    jobs = CountingJobs(h.nc.jetstream())
    delivery = Delivery(Transport.KAFKA, "trading.portfolio.events")
    await FanOut(store, jobs).handle(Event(envelope, payload, {}, delivery))
    assert jobs.published == 0
    another, another_payload = position_opened(tenant)
    await FanOut(store, jobs).handle(Event(another, another_payload, {}, delivery))
    assert jobs.published == 1
    await receiver.wait_for(2)
    await asyncio.sleep(0.5)
    assert len(receiver.received()) == 2


async def test_deleted_webhook_gets_nothing_and_drops_its_dead_letters(
    notification: Harness, receiver: Receiver
) -> None:
    h, tenant = notification, new_tenant()
    registered = await register(h, tenant, receiver.url)
    receiver.status = 500
    await publish(h, order_update(tenant))
    await eventually(lambda: dead_letters(h, tenant))
    webhook_id = registered.webhook.webhook_id
    await h.stub.DeleteWebhook(pb.DeleteWebhookRequest(webhook_id=webhook_id), metadata=md(tenant))
    assert await dead_letters(h, tenant) == []
    seen = len(receiver.received())
    receiver.status = 200
    await publish(h, order_update(tenant))
    await asyncio.sleep(1.0)
    assert len(receiver.received()) == seen
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.stub.DeleteWebhook(pb.DeleteWebhookRequest(webhook_id=webhook_id), metadata=md(tenant))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_webhook_listing_pages_newest_first(notification: Harness) -> None:
    h, tenant = notification, new_tenant()
    ids = [(await register(h, tenant, f"http://127.0.0.1:9/hook-{i}")).webhook.webhook_id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await h.stub.ListWebhooks(
            pb.ListWebhooksRequest(page_size=2, page_token=token), metadata=md(tenant)
        )
        seen += [w.webhook_id for w in page.webhooks]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.stub.ListWebhooks(pb.ListWebhooksRequest(page_token="garbage!"), metadata=md(tenant))
    assert "page_token" in violations(caught.value)


# ---------------------------------------------------------------------------- target policy


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/in", "WEBHOOK_URL_INSECURE"),
        ("https://user:pass@hooks.example.com/in", "WEBHOOK_URL_CREDENTIALS"),
        ("https://127.0.0.1/in", "WEBHOOK_URL_PRIVATE_ADDRESS"),
        ("https://10.20.30.40/in", "WEBHOOK_URL_PRIVATE_ADDRESS"),
        ("https://169.254.169.254/latest/meta-data", "WEBHOOK_URL_PRIVATE_ADDRESS"),
        ("https://[::1]:8443/in", "WEBHOOK_URL_PRIVATE_ADDRESS"),
        # A name is resolved, and every address it resolves to is checked.
        ("https://localhost/in", "WEBHOOK_URL_PRIVATE_ADDRESS"),
        ("https://no-such-host.invalid/in", "WEBHOOK_URL_UNRESOLVABLE"),
    ],
)
async def test_refused_targets_are_invalid_argument_with_the_field(
    notification: Harness, url: str, reason: str
) -> None:
    tenant = new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await notification.strict.RegisterWebhook(pb.RegisterWebhookRequest(url=url), metadata=md(tenant))
    assert violations(caught.value) == {"url": reason}
    listed = await notification.strict.ListWebhooks(pb.ListWebhooksRequest(), metadata=md(tenant))
    assert list(listed.webhooks) == []  # nothing stored


async def test_target_policy_accepts_public_https_and_refuses_unknown_event_types(
    notification: Harness,
) -> None:
    tenant = new_tenant()
    ok = await notification.strict.RegisterWebhook(
        pb.RegisterWebhookRequest(url="https://93.184.215.14/hooks?src=trading"), metadata=md(tenant)
    )
    assert ok.webhook.url == "https://93.184.215.14/hooks?src=trading"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await notification.strict.RegisterWebhook(
            pb.RegisterWebhookRequest(
                url="https://93.184.215.14/x",
                event_types=["trading.risk.v1.RiskAlert", "trading.marketdata.v1.Tick"],
            ),
            metadata=md(tenant),
        )
    assert violations(caught.value) == {"event_types[1]": "webhook.event_type_unknown"}
    # The contract's own checks (protovalidate) answer the same way.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await notification.strict.RegisterWebhook(
            pb.RegisterWebhookRequest(url="not a url"), metadata=md(tenant)
        )
    assert "url" in violations(caught.value)


async def test_delivery_time_check_refuses_a_target_that_now_resolves_privately(receiver: Receiver) -> None:
    """DNS rebinding: the policy is applied again at every attempt, to the
    addresses the name resolves to then; the request goes to the checked
    address with the original Host header."""
    from services.notification.delivery import WebhookSender

    port = receiver.url.split(":")[2].split("/")[0]
    by_name = f"http://localhost:{port}/hooks/in"
    strict = WebhookSender(NotificationSettings(allow_insecure_http=True, delivery_attempts=2))
    lenient = WebhookSender(LENIENT)
    try:
        refused = await strict.deliver(by_name, "whsec_" + base64.b64encode(b"k" * 32).decode(), "e-1", b"{}")
        assert not refused.delivered and refused.error.startswith("target refused:") and refused.attempts == 1
        assert receiver.received() == []
        delivered = await lenient.deliver(
            by_name, "whsec_" + base64.b64encode(b"k" * 32).decode(), "e-2", b"{}"
        )
        assert delivered.delivered and delivered.http_status == 200
        (request,) = receiver.received()
        assert request.headers["host"] == f"localhost:{port}"
    finally:
        await strict.close()
        await lenient.close()


# ---------------------------------------------------------------------------- tenants and streams


async def next_notifications(stream: Any, count: int, timeout: float = 10.0) -> list[ntypes.Notification]:
    found: list[ntypes.Notification] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            response = await stream.read()
            assert response is not grpc.aio.EOF
            found.append(response.notification)
    return found


async def test_subscribe_streams_the_tenants_events_live(notification: Harness) -> None:
    h, tenant = notification, new_tenant()
    everything = h.stub.Subscribe(pb.SubscribeRequest(), metadata=md(tenant))
    critical_risk = h.stub.Subscribe(
        pb.SubscribeRequest(kinds=[ntypes.NOTIFICATION_KIND_RISK], min_severity=ntypes.SEVERITY_CRITICAL),
        metadata=md(tenant),
    )
    await eventually(lambda: _true(h.api.active_streams >= 2))
    await asyncio.sleep(0.2)  # the streams' NATS subscriptions are flushed
    events = [
        order_update(tenant, filled=False),
        order_update(tenant),
        trading_halted(tenant),
        position_opened(tenant),
    ]
    for event in events:
        await publish(h, event)
    got = await next_notifications(everything, 4)
    assert [n.event_id for n in got] == [e[0].event_id for e in events]
    assert [(n.kind, n.severity, n.title) for n in got] == [
        (ntypes.NOTIFICATION_KIND_ORDER, ntypes.SEVERITY_INFO, "Order accepted"),
        (ntypes.NOTIFICATION_KIND_FILL, ntypes.SEVERITY_INFO, "Order filled"),
        (ntypes.NOTIFICATION_KIND_RISK, ntypes.SEVERITY_CRITICAL, "Trading halted"),
        (ntypes.NOTIFICATION_KIND_PORTFOLIO, ntypes.SEVERITY_INFO, "Position opened"),
    ]
    assert got[1].body == "Bought 0.5 BTC-USD at 64210.50"
    fill_payload = execution_events.OrderStatusChanged()
    assert got[1].payload.Unpack(fill_payload) and fill_payload.fill.price.value == "64210.50"
    (halt,) = await next_notifications(critical_risk, 1)
    assert halt.event_id == events[2][0].event_id
    everything.cancel()
    critical_risk.cancel()
    await eventually(lambda: _true(h.api.active_streams == 0))


async def _true(value: bool) -> bool:
    return value


async def test_one_tenants_events_never_reach_another_tenant(
    notification: Harness, receiver: Receiver
) -> None:
    h, tenant_a, tenant_b = notification, new_tenant(), new_tenant()
    webhook_a = await register(h, tenant_a, receiver.url)
    # Tenant B's webhook points at the same server, on another path: what
    # reaches that path could only be misrouted.
    webhook_b = await register(h, tenant_b, receiver.url + "?tenant=b")
    stream_b = h.stub.Subscribe(pb.SubscribeRequest(), metadata=md(tenant_b))
    stream_a = h.stub.Subscribe(pb.SubscribeRequest(), metadata=md(tenant_a))
    await eventually(lambda: _true(h.api.active_streams >= 2))
    await asyncio.sleep(0.2)
    a_events = [order_update(tenant_a), trading_halted(tenant_a), position_opened(tenant_a)]
    for event in a_events:
        await publish(h, event)
    got_a = await next_notifications(stream_a, 3)
    assert {n.event_id for n in got_a} == {e[0].event_id for e in a_events}
    await receiver.wait_for(3)
    await asyncio.sleep(1.0)  # anything misrouted would have arrived by now
    delivered = receiver.received()
    assert len(delivered) == 3
    assert {r.path for r in delivered} == {"/hooks/in"}  # none to tenant B's URL
    assert {verify(webhook_a.signing_secret, r)["tenantId"] for r in delivered} == {tenant_a}
    # Tenant B's stream heard nothing: the next thing it gets is B's own event.
    own = order_update(tenant_b)
    await publish(h, own)
    (first_b,) = await next_notifications(stream_b, 1)
    assert first_b.event_id == own[0].event_id
    stream_a.cancel()
    stream_b.cancel()

    # Nor can B see or touch A's webhooks and dead letters.
    listed_b = await h.stub.ListWebhooks(pb.ListWebhooksRequest(), metadata=md(tenant_b))
    assert [w.webhook_id for w in listed_b.webhooks] == [webhook_b.webhook.webhook_id]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.stub.DeleteWebhook(
            pb.DeleteWebhookRequest(webhook_id=webhook_a.webhook.webhook_id), metadata=md(tenant_b)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert await dead_letters(h, tenant_b, webhook_a.webhook.webhook_id) == []  # a filter, not a lookup


async def test_slow_receivers_time_out_and_are_retried(receiver: Receiver) -> None:
    from services.notification.delivery import WebhookSender

    receiver.delay_s = 1.0
    sender = WebhookSender(
        NotificationSettings(
            allow_insecure_http=True,
            allow_private_targets=True,
            attempt_timeout_s=0.2,
            delivery_attempts=2,
            backoff_initial_s=0.01,
            backoff_max_s=0.02,
        )
    )
    try:
        started = time.perf_counter()
        outcome = await sender.deliver(
            receiver.url, "whsec_" + base64.b64encode(b"k" * 32).decode(), "e", b"{}"
        )
        elapsed = time.perf_counter() - started
    finally:
        await sender.close()
    assert (outcome.delivered, outcome.attempts, outcome.http_status) == (False, 2, 0)
    assert outcome.error == "timeout after 0.2 s"
    assert elapsed < 1.0  # each attempt was cut at 0.2 s, not at the receiver's pace
    await receiver.wait_for(2)


async def test_poison_order_update_goes_to_the_dead_letter_stream(notification: Harness) -> None:
    """The orders consumer is a runtime durable: an undecodable message is
    dead-lettered with its reason, headers and attempt count, and consumption goes on."""
    h, tenant = notification, new_tenant()
    js = h.nc.jetstream()
    subject = f"execution.orders.{tenant}.BTC-USD"
    await js.publish(subject, b"\x00not an envelope", headers={"x-test": tenant})
    letters = NatsDeadLetters(NatsPublisher(h.nc, event_registry()))

    async def poisoned() -> list[Any]:
        found = await letters.list(h.names.orders_durable)
        return [d for d in found if d.headers.get("x-test") == tenant]

    (letter,) = await eventually(poisoned)
    assert (letter.reason, letter.attempts, letter.consumer) == ("undecodable", 0, h.names.orders_durable)
    assert letter.source.split("/")[1] == subject and letter.value == b"\x00not an envelope"


async def test_latency_from_event_to_webhook_and_stream(notification: Harness, receiver: Receiver) -> None:
    """Publish -> signed POST received, and publish -> Subscribe message, for
    order updates one at a time (printed; bounds are loose: shared CI cores)."""
    h, tenant = notification, new_tenant()
    await register(h, tenant, receiver.url)
    stream = h.stub.Subscribe(pb.SubscribeRequest(), metadata=md(tenant))
    await eventually(lambda: _true(h.api.active_streams >= 1))
    await asyncio.sleep(0.2)
    to_webhook: list[float] = []
    to_stream: list[float] = []
    for i in range(40):
        started = time.perf_counter()
        await publish(h, order_update(tenant))
        await next_notifications(stream, 1)
        to_stream.append(time.perf_counter() - started)
        received = await receiver.wait_for(i + 1)
        to_webhook.append(received[i].at - started)
    stream.cancel()

    def pct(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000

    print(
        f"\nevent -> Subscribe: p50 {pct(to_stream, 0.5):.1f} ms, p95 {pct(to_stream, 0.95):.1f} ms; "
        f"event -> webhook: p50 {pct(to_webhook, 0.5):.1f} ms, p95 {pct(to_webhook, 0.95):.1f} ms"
    )
    assert pct(to_webhook, 0.95) < 2000 and pct(to_stream, 0.95) < 1000


async def test_bad_input_is_refused_with_the_field_and_changes_nothing(notification: Harness) -> None:
    h, tenant = notification, new_tenant()
    kept = await register(h, tenant, "http://127.0.0.1:9/kept")
    stub = h.stub
    bad: list[tuple[str, Awaitable[Any], str]] = [
        (
            "webhook id",
            stub.DeleteWebhook(pb.DeleteWebhookRequest(webhook_id="1; drop"), metadata=md(tenant)),
            "webhook_id",
        ),
        (
            "dead letter id",
            stub.RedriveDeadLetter(pb.RedriveDeadLetterRequest(dead_letter_id="x"), metadata=md(tenant)),
            "dead_letter_id",
        ),
        (
            "page size",
            stub.ListDeadLetters(pb.ListDeadLettersRequest(page_size=501), metadata=md(tenant)),
            "page_size",
        ),
        (
            "description",
            stub.RegisterWebhook(
                pb.RegisterWebhookRequest(url="http://127.0.0.1:9/x", description="d" * 257),
                metadata=md(tenant),
            ),
            "description",
        ),
        (
            "scheme",
            stub.RegisterWebhook(pb.RegisterWebhookRequest(url="ftp://127.0.0.1/x"), metadata=md(tenant)),
            "url",
        ),
    ]
    for label, call, field_name in bad:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert field_name in violations(caught.value), label
    subscribe = stub.Subscribe(
        pb.SubscribeRequest(kinds=[ntypes.NOTIFICATION_KIND_UNSPECIFIED]), metadata=md(tenant)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await subscribe.read()
    assert any(f.startswith("kinds") for f in violations(caught.value))
    # Well-formed ids that name nothing: NOT_FOUND.
    for call in (
        stub.DeleteWebhook(pb.DeleteWebhookRequest(webhook_id=str(uuid7())), metadata=md(tenant)),
        stub.RedriveDeadLetter(pb.RedriveDeadLetterRequest(dead_letter_id=str(uuid7())), metadata=md(tenant)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # No tenant, no answer.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListWebhooks(pb.ListWebhooksRequest())
    assert caught.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)
    listed = await stub.ListWebhooks(pb.ListWebhooksRequest(), metadata=md(tenant))
    assert [w.webhook_id for w in listed.webhooks] == [kept.webhook.webhook_id]
