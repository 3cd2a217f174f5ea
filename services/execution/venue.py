"""Venues: where accepted orders go. The paper venue fills them against live quotes.

A venue adapter implements :class:`services.execution.ports.Venue`. It
answers in the domain's inputs (Accept, ReportFill, Cancel, ...), so the
transition table stays the only place that decides what happens to an order,
and the service stores whatever the venue reported in one transaction with
its outbox rows.

The paper venue reads the last quote of the symbol from marketdata's cache
(the :class:`services.execution.ports.MarketQuotes` port; in production
Redis, ``md:quote:{symbol}``). An arriving order trades at the touch, up to
the size shown there (IOC/FOK decide what happens to the rest, see ``domain.on_quote``);
GTC/DAY rests. The :class:`Matcher` background task fills resting orders
when the market crosses them: it listens to ticks on NATS
(``marketdata.ticks.>``), keeps only the newest quote per symbol (a burst of
ticks costs one database scan), and every ``sweep_interval_s`` also re-reads
the cached quotes of symbols with working orders (a tick missed while
disconnected is caught up) and expires DAY orders whose session has ended.
A tick of a symbol without working orders costs no database scan: the
matcher knows which symbols have them (read at each sweep, and told at once
of orders that start resting in this process; one rested by another replica
is matched from its next sweep on).

Simplifications of the paper venue: each resting order may take the whole
touch size of a quote (orders do not compete for it), and a crossing quote
gives at most one fill per order (execution id derived from order id and
quote sequence, so re-reading the same quote never fills twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from prometheus_client import Counter
from trading.common.v1 import market_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.contracts import event_registry
from runtime.health import HealthMonitor, default_monitor
from runtime.messaging import Event
from runtime.messaging.envelope import uuid7
from runtime.messaging.nats.live import live_subscription
from services.execution.domain import (
    Accept,
    Cancel,
    DuplicateFill,
    InvalidTransition,
    Order,
    OrderEvent,
    OrderInput,
    Quote,
    TimeInForce,
    apply,
    day_session_end,
    expiry_due,
    on_quote,
)
from services.execution.ports import MarketQuotes, OrderStore, ToOutbox
from services.execution.wire import quote_from_proto

log = logging.getLogger(__name__)

TICKS_SUBJECT = "marketdata.ticks.>"
_TICK_TYPE = md_events.Tick.DESCRIPTOR.full_name

MATCHED = Counter("execution_paper_resting_fills_total", "Resting orders filled by the paper matcher.")
EXPIRED = Counter("execution_day_orders_expired_total", "DAY orders expired at the end of their session.")


class PaperVenue:
    """Simulated venue on live quotes; confirms cancels at once."""

    name = "paper"

    def __init__(self, quotes: MarketQuotes) -> None:
        self._quotes = quotes

    async def lists(self, symbol: str) -> bool:
        """The paper venue trades marketdata's instrument universe."""
        return await self._quotes.lists(symbol)

    async def last_quote(self, symbol: str) -> Quote | None:
        return await self._quotes.last_quote(symbol)

    def session_end(self, order: Order) -> datetime | None:
        return day_session_end(order.created_at) if order.time_in_force is TimeInForce.DAY else None

    async def submit(self, order: Order, at: datetime, quote: Quote | None = None) -> Sequence[OrderInput]:
        if quote is None:
            quote = await self.last_quote(order.symbol)
        accept = Accept(at=at, venue=self.name, venue_order_id=order.order_id)
        accepted, _ = apply(order, accept)
        return (
            accept,
            *on_quote(
                accepted,
                quote,
                at=at,
                incoming=True,
                session_end=self.session_end(order),
                execution_id=str(uuid7()),
            ),
        )

    async def cancel(self, order: Order, at: datetime) -> Sequence[OrderInput]:
        return (Cancel(at=at),)

    def on_market(
        self, order: Order, quote: Quote, at: datetime, expires_at: datetime | None
    ) -> Sequence[OrderInput]:
        # quote.sequence 0 means "unsequenced": fall back to a fresh id.
        execution_id = None if quote.sequence else str(uuid7())
        return on_quote(
            order, quote, at=at, incoming=False, session_end=expires_at, execution_id=execution_id
        )


def quote_of_tick(tick: md_events.Tick) -> Quote:
    """The domain quote a tick carries (a Tick has the Quote's fields)."""
    return quote_from_proto(
        market_pb2.Quote(
            symbol=tick.symbol,
            bid_price=tick.bid_price,
            bid_size=tick.bid_size,
            ask_price=tick.ask_price,
            ask_size=tick.ask_size,
            sequence=tick.sequence,
        )
    )


class Matcher:
    """Background task: resting orders against new quotes, and DAY expiries."""

    def __init__(
        self,
        store: OrderStore,
        venue: PaperVenue,
        nats: NatsClient,
        to_outbox: ToOutbox,
        on_change: Callable[[Sequence[OrderEvent]], None],
        *,
        sweep_interval_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        health: HealthMonitor | None = None,
    ) -> None:
        self._store = store
        self._venue = venue
        self._nats = nats
        self._to_outbox = to_outbox
        self._on_change = on_change
        self._sweep_interval_s = sweep_interval_s
        self._clock = clock
        self._latest: dict[str, md_events.Tick] = {}
        # Symbols with working orders; None until the first sweep has read them.
        self._working: set[str] | None = None
        self._noted: set[str] = set()  # noted while a sweep reads the working symbols
        self._dirty = asyncio.Event()
        self._ticks = contextlib.AsyncExitStack()  # holds the tick subscription while started
        self._task: asyncio.Task[None] | None = None
        # runtime.health: a round that sweeps without an error is progress.
        self._health = (health or default_monitor()).register("matcher:execution-paper")

    async def start(self) -> None:
        await self._ticks.enter_async_context(
            live_subscription(
                self._nats,
                event_registry(),
                [TICKS_SUBJECT],
                name="execution-matcher-ticks",
                event_types=[_TICK_TYPE],
                handler=self._on_tick,
                # Every tick of every symbol, only the newest kept: no span per tick.
                traced=False,
            )
        )
        self._task = asyncio.create_task(self._run(), name="execution-paper-matcher")

    async def stop(self) -> None:
        await self._ticks.aclose()
        task, self._task = self._task, None
        self._health.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _on_tick(self, event: Event) -> None:
        tick = event.payload
        assert isinstance(tick, md_events.Tick)  # the subscription's only event type
        # Kept as it came: only the newest tick of a symbol with working
        # orders is ever turned into a quote (at 1,000 ticks/s, converting
        # every one would cost this process, where PlaceOrder runs, for nothing).
        self._latest[tick.symbol] = tick
        self._dirty.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            swept = False
            try:
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self._sweep_interval_s
                    await self.sweep()
                    swept = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), max(0.0, next_sweep - loop.time()))
                self._dirty.clear()
                latest, self._latest = self._latest, {}
                for symbol, tick in latest.items():
                    if self._working is None or symbol in self._working:
                        await self.match(quote_of_tick(tick))
                # Only a round with a sweep counts: rounds without one must
                # not hide a sweep that fails every time.
                if swept:
                    self._health.progress()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("matcher: round failed: %r", exc)
                self._health.failing(f"round: {exc!r}")
                await asyncio.sleep(0.2)

    def note(self, events: Sequence[OrderEvent]) -> None:
        """Orders changed in this process: those now resting make their symbol matchable at once."""
        for event in events:
            if event.order.is_working:
                self._noted.add(event.order.symbol)
                if self._working is not None:
                    self._working.add(event.order.symbol)

    async def sweep(self) -> None:
        """Expire DAY orders past their session; re-match symbols from the cached quotes."""
        now = self._clock()
        for tenant, order_id in await self._store.due_expiries(now):
            if await self._apply(tenant, order_id, lambda o, exp: expiry_due(o, now, exp)):
                EXPIRED.inc()
        self._noted = set()
        working = await self._store.working_symbols()
        self._working = set(working) | self._noted
        for symbol in working:
            quote = await self._venue.last_quote(symbol)
            if quote is not None:
                await self.match(quote)

    async def match(self, quote: Quote) -> None:
        """Fill every working order of the quote's symbol that it crosses."""
        if self._working is not None and quote.symbol not in self._working:
            return
        bid = quote.bid if quote.bid > 0 and quote.bid_size > 0 else None
        ask = quote.ask if quote.ask > 0 and quote.ask_size > 0 else None
        if bid is None and ask is None:
            return
        now = self._clock()
        for tenant, order_id in await self._store.marketable(quote.symbol, bid=bid, ask=ask):
            if await self._apply(tenant, order_id, lambda o, exp: self._venue.on_market(o, quote, now, exp)):
                MATCHED.inc()

    async def _apply(
        self,
        tenant: str,
        order_id: str,
        decide: Callable[[Order, datetime | None], Sequence[OrderInput]],
    ) -> bool:
        try:
            result = await self._store.update(tenant, decide, self._to_outbox, order_id=order_id)
        except (DuplicateFill, InvalidTransition):
            return False  # already applied, or the order moved on meanwhile
        if result is None or not result[1]:
            return False
        self._on_change(result[1])
        return True
