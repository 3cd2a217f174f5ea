"""Live subscriptions on NATS: what a streaming RPC relays for as long as the
call lasts, or what a component watches while it runs (the paper venue's
quotes). No durability, no retries, no dead letters: a live view that misses
a message shows the next one (subscribers that must not lose anything are
`runtime.messaging.nats.subscriber`).

    async with live_subscription(nc, registry, subjects, name="notification-stream") as events:
        async for event in events: ...              # decoded Events, in arrival order

    async with ordered_subscription(nc, registry, subject, stream="EXECUTION",
                                    name="execution-order-updates", start_after=seq) as events: ...

`live_subscription` is core NATS (the server knows the subscriptions when
the context is entered, so what is published afterwards arrives);
`ordered_subscription` is an ephemeral JetStream ordered consumer from a
stream position (resumable streams: `event.delivery.position` is the stream
sequence). Both end their subscriptions when the context exits, so a
cancelled call leaves nothing behind.

Events come either by iterating (buffered, at most `buffer`; on overflow the
oldest is dropped and counted in `dropped`, or with `Overflow.END` the
iteration raises `FellBehindError` after the events buffered before it) or,
given `handler`, by a callback per event. Every message gets the CONSUMER
span and the consumed/failed metrics of the other subscribers (`name` is the
consumer label): iterated events count as handled once buffered for the
iterating call. Undecodable messages and those of other `event_types` are
skipped (the former logged and counted as failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry.trace import INVALID_SPAN, Span

from runtime.messaging import headers as h
from runtime.messaging.base import Delivery, Event, Handler, Registry
from runtime.messaging.consuming import attempt, decode
from runtime.messaging.envelope import EnvelopeError
from runtime.messaging.nats.telemetry import TRANSPORT as _NATS
from runtime.messaging.nats.telemetry import consume_span, core_delivery, stream_delivery
from runtime.messaging.telemetry import MessagingMetrics, default_metrics, mark_failed

log = logging.getLogger(__name__)


class Overflow(enum.StrEnum):
    """What a full buffer does with the next message."""

    DROP_OLDEST = "drop_oldest"  # keep the newest (quotes: only the latest matters)
    END = "end"  # the iterating call fell behind: it ends (FellBehindError)


class FellBehindError(Exception):
    """The iterating call did not keep up with an `Overflow.END` subscription."""


_FELL_BEHIND = object()  # the overflow marker in the buffer


class LiveSubscription:
    """The events of a live subscription (made by `live_subscription` or
    `ordered_subscription`): an async iterator, or a callback per event."""

    def __init__(
        self,
        registry: Registry,
        *,
        name: str,
        event_types: Sequence[str] = (),
        handler: Handler | None = None,
        buffer: int = 1000,
        overflow: Overflow = Overflow.DROP_OLDEST,
        metrics: MessagingMetrics | None = None,
        traced: bool = True,
    ) -> None:
        if buffer < 1:
            raise ValueError("buffer must hold at least one event")
        self._registry = registry
        self._name = name
        self._types = frozenset(event_types) or None
        self._handler = handler
        self._overflow = overflow
        self._metrics = metrics or default_metrics()
        self._buffer: asyncio.Queue[Event | object] = asyncio.Queue(maxsize=buffer)
        self.dropped = 0  # events dropped because the buffer was full
        self._traced = traced

    @property
    def name(self) -> str:
        return self._name

    def __aiter__(self) -> LiveSubscription:
        return self

    async def __anext__(self) -> Event:
        """The next event (waits; cancelling the wait loses nothing)."""
        if self._handler is not None:
            raise TypeError(f"live subscription {self._name} hands its events to a handler")
        item = await self._buffer.get()
        if item is _FELL_BEHIND:
            raise FellBehindError(f"live subscription {self._name} fell behind")
        assert isinstance(item, Event)
        return item

    def discard_pending(self) -> int:
        """Drop the buffered events (a caller that only needs to know that
        something arrived); returns how many there were."""
        count = 0
        while not self._buffer.empty():
            if self._buffer.get_nowait() is _FELL_BEHIND:
                self._buffer.put_nowait(_FELL_BEHIND)  # still behind: keep the verdict
                break
            count += 1
        return count

    async def on_message(self, msg: Msg, delivery: Delivery) -> None:
        """One received message: decode it under its CONSUMER span, then
        buffer it or call the handler."""
        headers = msg.headers or {}
        spanned: AbstractContextManager[Span] = (
            consume_span(msg, self._name) if self._traced else nullcontext(INVALID_SPAN)
        )
        with spanned as span:
            start = time.perf_counter()
            try:
                envelope, payload = decode(msg.data, self._registry)
            except EnvelopeError as exc:
                mark_failed(span, "undecodable", exc)
                self._metrics.failed(_NATS, self._name, headers.get(h.EVENT_TYPE, ""))
                log.warning(
                    "live subscription %s skipped an undecodable message on %s: %s",
                    self._name,
                    msg.subject,
                    exc,
                )
                return
            if self._types is not None and envelope.event_type not in self._types:
                return
            event = Event(envelope, payload, headers, delivery)
            if self._handler is not None:
                error = await attempt(
                    self._handler, event, transport=_NATS, consumer=self._name, metrics=self._metrics
                )
                if error is not None:
                    mark_failed(span, "handler_failed", error)
                    log.warning(
                        "live subscription %s: handler failed on %s: %r", self._name, msg.subject, error
                    )
                return
            self._put(event)
            self._metrics.consumed(_NATS, self._name, envelope, time.perf_counter() - start)

    def _put(self, event: Event) -> None:
        if not self._buffer.full():
            self._buffer.put_nowait(event)
            return
        self._buffer.get_nowait()
        self.dropped += 1
        if self._overflow is Overflow.DROP_OLDEST:
            self._buffer.put_nowait(event)
        else:
            self._buffer.put_nowait(_FELL_BEHIND)


@contextlib.asynccontextmanager
async def live_subscription(
    nc: NatsClient,
    registry: Registry,
    subjects: Iterable[str],
    *,
    name: str,
    event_types: Sequence[str] = (),
    handler: Handler | None = None,
    buffer: int = 1000,
    overflow: Overflow = Overflow.DROP_OLDEST,
    metrics: MessagingMetrics | None = None,
    traced: bool = True,
) -> AsyncIterator[LiveSubscription]:
    """Core NATS subscriptions to `subjects` for the life of the context;
    entered once the server has them. `traced=False`: no CONSUMER span per
    message (metrics still count them), for a high-rate subscription that
    only keeps the newest value, where a span per message would cost more
    than handling it and explain nothing."""
    live = LiveSubscription(
        registry,
        name=name,
        event_types=event_types,
        handler=handler,
        buffer=buffer,
        overflow=overflow,
        metrics=metrics,
        traced=traced,
    )

    async def on_msg(msg: Msg) -> None:
        await live.on_message(msg, core_delivery(msg))

    subscriptions = []
    try:
        for subject in subjects:
            subscriptions.append(await nc.subscribe(subject, cb=on_msg))
        await nc.flush()  # the server knows the subscriptions from here on
        yield live
    finally:
        for sub in subscriptions:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


@contextlib.asynccontextmanager
async def ordered_subscription(
    nc: NatsClient,
    registry: Registry,
    subject: str,
    *,
    stream: str,
    name: str,
    start_after: int = 0,
    event_types: Sequence[str] = (),
    handler: Handler | None = None,
    buffer: int = 1000,
    overflow: Overflow = Overflow.DROP_OLDEST,
    inactive_threshold_s: float = 30.0,
    metrics: MessagingMetrics | None = None,
) -> AsyncIterator[LiveSubscription]:
    """An ephemeral ordered JetStream consumer of `subject` on `stream` for
    the life of the context: the messages after stream sequence
    `start_after`, or (0) those published from now on. The consumer exists
    when the context is entered; the server removes it once unused for
    `inactive_threshold_s` should the unsubscribe not reach it."""
    live = LiveSubscription(
        registry,
        name=name,
        event_types=event_types,
        handler=handler,
        buffer=buffer,
        overflow=overflow,
        metrics=metrics,
    )

    async def on_msg(msg: Msg) -> None:
        await live.on_message(msg, stream_delivery(msg))

    config = ConsumerConfig(inactive_threshold=inactive_threshold_s)
    if start_after:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_after + 1
    else:
        config.deliver_policy = DeliverPolicy.NEW
    sub = await nc.jetstream().subscribe(
        subject, stream=stream, cb=on_msg, ordered_consumer=True, config=config
    )
    try:
        yield live
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
