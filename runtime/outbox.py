"""The transactional outbox every service announces its state changes through.

A service writes, in the same PostgreSQL transaction as the change it
reports, one row per event envelope and destination into ``<schema>.outbox``
(:class:`OutboxWriter`); one background :class:`OutboxRelay` per service
publishes committed rows to Kafka (the event type's topic) or NATS (its
subject), both routed by the event registry as any direct publish is, and
marks them sent. So:

- nothing is published that was not committed (a rolled-back transaction
  takes its rows with it), and nothing committed is lost (a crash between
  commit and publish leaves the row for the next round);
- delivery is at-least-once: a crash between the broker's ack and the mark
  publishes the same envelope (same event id) again. Consumers drop
  duplicates by event id (JetStream also drops a repeated ``Nats-Msg-Id``).

Order: rows sharing a ``partition_key`` (an order id, a tenant) and a
destination are published one after another in id order, and a failed
publish holds back the later rows of its key on that destination, so they
never overtake it. Rows of different keys or destinations go concurrently
(each transport's consumers see its own rows in order; nothing can observe an
order across the two, so a live NATS update does not wait for the Kafka ack
of the durable event written before it); consecutive rows of one key and
destination go as one batch (one round trip for a burst, order kept by the
client; a failed batch is published again whole).
Several replicas may run the relay: a store hands a batch to one replica at
a time (PostgreSQL: an advisory lock in the claim's transaction), so per-key
order holds across replicas.

Lanes: a store that can claim one destination's rows on their own
(:attr:`OutboxStore.lanes`; the PostgreSQL table can, by its destination
column) gets one relay loop per destination, each with its own claim and
lock. A round ends only when its broker acknowledged, so with one loop the
NATS updates of the next orders waited for the Kafka acks of the round before
(seconds when tansu is busy): an order's live status is not held up by the
archive's broker any more. The Redis streams hold both destinations in one
stream per tenant: one lane.

Where the rows live is the store's business (:class:`OutboxStore`): a
``<schema>.outbox`` table for the services whose state is in PostgreSQL
(:class:`PostgresOutbox`), per-tenant Redis streams for risk, whose state is
in Redis and whose "transaction" is a Lua script
(:class:`runtime.outbox_redis.RedisOutbox`). The relay, its ordering,
batching, set-aside, health and metrics are the same for both.

Latency: the writer's caller calls :meth:`OutboxRelay.wake` after commit, so
the relay looks at once instead of at its next poll (``poll_interval_s``, the
safety net for rows left by a crash, a broker outage or another replica).

One table shape for every service: :func:`outbox_table_sql` is the DDL a
service's migration contains verbatim (a unit test pins it), and the relay
checks the live table's columns at start (:func:`check_outbox_shape`).
Rows are kept for ``retention`` after they were sent (operators and tests
can see what went out) and then pruned by the relay. A row that can never
be published (no route, invalid subject) gets ``failed_at`` and
``last_error`` and is set aside rather than blocking the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, Protocol

import asyncpg
from google.protobuf import message as pb_message
from prometheus_client import Counter, Gauge
from trading.common.v1 import event_pb2

from runtime.health import ComponentHealth, HealthMonitor, default_monitor
from runtime.messaging import NotRoutedError
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from runtime.storage.postgres import quote_ident
from runtime.tasks import stop_task

log = logging.getLogger(__name__)

Destination = Literal["kafka", "nats"]
KAFKA: Destination = "kafka"
NATS: Destination = "nats"
DESTINATIONS: tuple[Destination, ...] = (KAFKA, NATS)

# How often the relay refreshes the outbox_backlog gauge (one cheap count).
_HOUSEKEEPING_EVERY_S = 1.0
# First key of the relay's two-int advisory lock ("outb" in ASCII); the second is the schema's crc32.
_LOCK_NAMESPACE = 0x6F757462

OUTBOX_BACKLOG = Gauge(
    "outbox_backlog", "Outbox rows committed but not yet published, per service.", ("service",)
)
OUTBOX_PUBLISHED = Counter(
    "outbox_published_total",
    "Outbox rows published, per service and destination.",
    ("service", "destination"),
)
OUTBOX_FAILURES = Counter(
    "outbox_publish_failures_total",
    "Failed outbox publishes (retried later), per service and destination.",
    ("service", "destination"),
)
OUTBOX_SET_ASIDE = Counter(
    "outbox_set_aside_total", "Outbox rows that can never be published (failed_at set).", ("service",)
)

# The columns of every service's outbox: name -> information_schema data_type.
OUTBOX_COLUMNS: dict[str, str] = {
    "id": "bigint",
    "tenant_id": "text",
    "event_id": "uuid",
    "event_type": "text",
    "destination": "text",
    "partition_key": "text",
    "envelope": "bytea",
    "created_at": "timestamp with time zone",
    "sent_at": "timestamp with time zone",
    "failed_at": "timestamp with time zone",
    "last_error": "text",
}


def outbox_table_sql(app_role: str) -> str:
    """The DDL of a service's outbox, for its migrations (run with the service's
    schema first on the search path). `app_role` is the service's login role
    (``trading_<svc>_app``): the relay runs as it outside tenant transactions and
    must see every tenant's rows; tenant transactions add their own tenant's."""
    role = quote_ident(app_role)
    return f"""\
-- The transactional outbox (runtime/outbox.py; this text is outbox_table_sql()).
-- One row per event envelope and destination, written in the transaction of
-- the change it reports; the relay publishes rows in id order (one key after
-- another) and sets sent_at.
CREATE TABLE outbox (
    id             bigserial   PRIMARY KEY,
    tenant_id      text        NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    destination    text        NOT NULL CHECK (destination IN ('kafka', 'nats')),
    -- Rows with the same key are published one after another, in id order.
    partition_key  text        NOT NULL,
    envelope       bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    -- Set for a row that can never be published (no route, invalid subject).
    failed_at      timestamptz,
    last_error     text        NOT NULL DEFAULT '',
    -- One envelope may go to both transports, once each.
    CONSTRAINT outbox_event_destination UNIQUE (event_id, destination)
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox
    USING (tenant_id = current_setting('app.tenant_id'))
    WITH CHECK (tenant_id = current_setting('app.tenant_id'));
CREATE POLICY service_role ON outbox TO {role} USING (true) WITH CHECK (true);
"""


class OutboxShapeError(RuntimeError):
    """A service's outbox table is not the shared shape."""


async def check_outbox_shape(conn: asyncpg.Connection, schema: str) -> None:
    """Raise :class:`OutboxShapeError` unless ``<schema>.outbox`` has exactly :data:`OUTBOX_COLUMNS`."""
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = 'outbox'",
        schema,
    )
    found = {r["column_name"]: r["data_type"] for r in rows}
    if found != OUTBOX_COLUMNS:
        raise OutboxShapeError(
            f"{schema}.outbox is not the shared outbox shape: has {sorted(found.items())},"
            f" expected {sorted(OUTBOX_COLUMNS.items())} (see runtime/outbox.py)"
        )


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One envelope to publish to one destination, written with the change it reports."""

    tenant_id: str
    event_id: str
    event_type: str
    destination: Destination
    partition_key: str
    envelope: bytes


def outbox_row(
    envelope: event_pb2.EventEnvelope, destination: Destination, *, partition_key: str | None = None
) -> OutboxRow:
    """The row of `envelope` for `destination`; `partition_key` orders rows
    among themselves (default: the tenant, i.e. the tenant's events in order)."""
    if destination not in DESTINATIONS:
        raise ValueError(f"outbox destination must be one of {DESTINATIONS}, not {destination!r}")
    return OutboxRow(
        tenant_id=envelope.tenant_id,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        destination=destination,
        partition_key=partition_key if partition_key is not None else envelope.tenant_id,
        envelope=envelope.SerializeToString(),
    )


def insert_outbox_sql(schema: str) -> str:
    """One statement adding rows from six arrays (tenant, event id, type, destination, key, envelope)."""
    return (
        f"INSERT INTO {quote_ident(schema)}.outbox"
        " (tenant_id, event_id, event_type, destination, partition_key, envelope)"
        " SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[])"
    )


def outbox_columns(
    rows: Sequence[OutboxRow],
) -> tuple[list[str], list[str], list[str], list[str], list[str], list[bytes]]:
    """The six arrays :func:`insert_outbox_sql` takes, for statements that fuse the insert with others."""
    return (
        [r.tenant_id for r in rows],
        [r.event_id for r in rows],
        [r.event_type for r in rows],
        [r.destination for r in rows],
        [r.partition_key for r in rows],
        [r.envelope for r in rows],
    )


class OutboxWriter:
    """Adds rows to ``<schema>.outbox`` inside the caller's transaction.

    Call the relay's :meth:`OutboxRelay.wake` after the transaction committed.
    """

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._insert = insert_outbox_sql(schema)

    async def add(
        self,
        conn: asyncpg.Connection,
        destination: Destination,
        envelope: event_pb2.EventEnvelope,
        *,
        partition_key: str | None = None,
    ) -> None:
        """Add one envelope for one destination (`conn` must be in a transaction)."""
        await self.add_rows(conn, [outbox_row(envelope, destination, partition_key=partition_key)])

    async def add_rows(self, conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
        """Add rows in one statement (`conn` must be in a transaction)."""
        if not conn.is_in_transaction():
            # Outside a transaction the row would commit on its own: not an outbox any more.
            raise RuntimeError("OutboxWriter.add needs the transaction of the change it reports")
        if rows:
            await conn.execute(self._insert, *outbox_columns(rows))


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A committed row not yet published, as a store hands it to the relay.
    `handle` is the store's own reference (a bigint id, a stream entry)."""

    handle: Hashable
    destination: str
    partition_key: str
    envelope: bytes


class OutboxClaim(Protocol):
    """Rows claimed for one relay round, and how the round reports back."""

    rows: Sequence[PendingRow]

    async def mark_sent(self, handles: Sequence[Hashable]) -> None: ...

    async def set_aside(self, failures: Sequence[tuple[Hashable, str]]) -> None: ...


class OutboxStore(Protocol):
    """Where a service's outbox lives: PostgreSQL (:class:`PostgresOutbox`, a
    table written in the change's transaction) or Redis
    (:class:`runtime.outbox_redis.RedisOutbox`, a stream written in the
    change's Lua script). One relay publishes from either."""

    @property
    def name(self) -> str: ...

    async def check(self) -> None:
        """Fail at start when the storage is not the expected shape."""
        ...

    @property
    def lanes(self) -> tuple[str | None, ...]:
        """The destinations whose rows this store claims separately (one relay loop
        each); ``(None,)``: every row in one claim."""
        ...

    def claim(
        self, limit: int, destination: str | None = None
    ) -> AbstractAsyncContextManager[OutboxClaim | None]:
        """Up to `limit` pending rows (of `destination`, one of :attr:`lanes`),
        oldest first, held against other replicas until the context ends (None:
        none, or another replica holds them)."""
        ...

    async def backlog(self) -> int: ...

    async def prune(self, retention: timedelta) -> None: ...


class PostgresOutbox:
    """``<schema>.outbox`` (the table :func:`outbox_table_sql` creates).

    Each claim runs in one transaction that first takes a transaction-level
    advisory lock for the schema, so one replica publishes at a time (the
    others find the lock taken and try next round) and per-key order holds
    across replicas; rows are claimed FOR UPDATE SKIP LOCKED."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self.schema = schema
        table = f"{quote_ident(schema)}.outbox"
        self._claim_sql = f"""SELECT id, destination, partition_key, envelope FROM {table}
            WHERE sent_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"""
        self._claim_lane_sql = f"""SELECT id, destination, partition_key, envelope FROM {table}
            WHERE sent_at IS NULL AND failed_at IS NULL AND destination = $2
            ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"""
        self._mark_sql = f"UPDATE {table} SET sent_at = now() WHERE id = ANY($1::bigint[])"
        self._set_aside_sql = f"UPDATE {table} SET failed_at = now(), last_error = $2 WHERE id = $1"
        self._backlog_sql = f"SELECT count(*) FROM {table} WHERE sent_at IS NULL AND failed_at IS NULL"
        self._prune_sql = f"""DELETE FROM {table} WHERE id IN (SELECT id FROM {table}
            WHERE sent_at < now() - $1::interval LIMIT 10000)"""

    @property
    def name(self) -> str:
        return self.schema

    async def check(self) -> None:
        async with self._pool.acquire() as conn:
            await check_outbox_shape(conn, self.schema)

    @property
    def lanes(self) -> tuple[str | None, ...]:
        return DESTINATIONS

    def _lock_key(self, destination: str | None) -> int:
        """The advisory lock of a lane (one replica claims a lane at a time)."""
        name = self.schema if destination is None else f"{self.schema}:{destination}"
        return zlib.crc32(name.encode()) - (1 << 31)  # signed 32-bit

    @asynccontextmanager
    async def claim(self, limit: int, destination: str | None = None) -> AsyncIterator[OutboxClaim | None]:
        async with self._pool.acquire() as conn, conn.transaction():
            # The whole-table claim (tests, tools) takes every lane's lock, so it
            # never runs beside a lane's claim of the same rows' keys.
            keys = [self._lock_key(d) for d in ((destination,) if destination else (None, *DESTINATIONS))]
            for key in keys:
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", _LOCK_NAMESPACE, key):
                    yield None  # another replica is publishing
                    return
            if destination is None:
                rows = await conn.fetch(self._claim_sql, limit)
            else:
                rows = await conn.fetch(self._claim_lane_sql, limit, destination)
            pending = [
                PendingRow(r["id"], r["destination"], r["partition_key"], bytes(r["envelope"])) for r in rows
            ]
            yield _PostgresClaim(self, conn, pending) if pending else None

    async def mark_sent(self, conn: asyncpg.Connection, ids: Sequence[Hashable]) -> None:
        """Inside the claim's transaction (a test crashes here on purpose)."""
        await conn.execute(self._mark_sql, list(ids))

    async def set_aside(self, conn: asyncpg.Connection, failures: Sequence[tuple[Hashable, str]]) -> None:
        await conn.executemany(self._set_aside_sql, failures)

    async def backlog(self) -> int:
        """Rows committed and not yet published (partial index: cheap while small)."""
        count: int = await self._pool.fetchval(self._backlog_sql)
        return count

    async def prune(self, retention: timedelta) -> None:
        await self._pool.execute(self._prune_sql, retention)


@dataclass(slots=True)
class _PostgresClaim:
    store: PostgresOutbox
    conn: asyncpg.Connection
    rows: Sequence[PendingRow]

    async def mark_sent(self, handles: Sequence[Hashable]) -> None:
        await self.store.mark_sent(self.conn, handles)

    async def set_aside(self, failures: Sequence[tuple[Hashable, str]]) -> None:
        await self.store.set_aside(self.conn, failures)


# The relays running in this process, for health checks (see running_relays).
_RUNNING: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


def running_relays() -> list[OutboxRelay]:
    """The relays started in this process and not stopped: a health watchdog reads
    their :meth:`OutboxRelay.backlog`, ``last_progress_at`` and ``last_error``."""
    return sorted(_RUNNING, key=lambda r: r.service)


class OutboxRelay:
    """Publishes an :class:`OutboxStore`'s rows (see the module docstring); one per service process."""

    def __init__(
        self,
        store: OutboxStore,
        *,
        kafka: KafkaPublisher | None = None,
        nats: NatsPublisher | None = None,
        service: str | None = None,
        batch_size: int = 200,
        poll_interval_s: float = 0.25,
        retry_delay_s: float = 0.2,
        max_retry_delay_s: float = 5.0,
        retention: timedelta = timedelta(days=1),
        prune_every_s: float = 300.0,
        health: HealthMonitor | None = None,
    ) -> None:
        self._store = store
        self._monitor = health
        self.service = service or store.name
        self._kafka = kafka
        self._nats = nats
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._retry_delay_s = retry_delay_s
        self._max_retry_delay_s = max_retry_delay_s
        self._retention = retention
        self._prune_every_s = prune_every_s
        self._wakes: dict[str | None, asyncio.Event] = {}  # per lane, made at start
        self._tasks: list[asyncio.Task[None]] = []
        # Set by stop(): the loop ends at its next turn even if a cancel was
        # swallowed inside a client (runtime.tasks).
        self._stopping = False
        self._failures_in_a_row: dict[str | None, int] = {}  # per lane
        self._last_prune = time.monotonic()
        self._last_housekeeping = 0.0
        # For a health watchdog: when the relay last finished a round without error
        # (wall clock, time.time()), and the last error seen (cleared by a clean round).
        self.last_progress_at: float = time.time()
        self.last_error: str | None = None
        self.last_round_failed = False
        # runtime.health: a clean round is progress, a failed one failing;
        # registered while running (stuck past the threshold: NOT_SERVING).
        # One per lane, so a Kafka lane that keeps failing is reported stuck
        # even while the NATS lane makes progress.
        self._healths: dict[str | None, ComponentHealth] = {}

    @property
    def store(self) -> OutboxStore:
        return self._store

    def wake(self) -> None:
        """Something was committed: look now instead of at the next poll."""
        for event in self._wakes.values():
            event.set()

    async def start(self) -> None:
        """Check the table's shape, then run in the background (a loop per lane)."""
        if not self._tasks:
            self._stopping = False
            await self._store.check()
            lanes = self._store.lanes
            monitor = self._monitor or default_monitor()
            self._healths = {
                lane: monitor.register(f"relay:{self.service}-outbox" + (f"-{lane}" if lane else ""))
                for lane in lanes
            }
            self._wakes = {lane: asyncio.Event() for lane in lanes}
            self._tasks = [
                asyncio.create_task(
                    self._run(lane, housekeeping=lane == lanes[0]),
                    name=f"{self.service}-outbox-relay" + (f"-{lane}" if lane else ""),
                )
                for lane in lanes
            ]
            _RUNNING.add(self)

    async def stop(self) -> None:
        """Stop after the batch in flight (an interrupted batch is simply published again later)."""
        tasks, self._tasks = self._tasks, []
        _RUNNING.discard(self)
        for health in self._healths.values():
            health.close()
        self._healths = {}
        self._stopping = True
        for task in tasks:
            await stop_task(task, name=f"{self.service} outbox relay")

    async def backlog(self) -> int:
        """Rows committed and not yet published."""
        count = await self._store.backlog()
        OUTBOX_BACKLOG.labels(self.service).set(count)
        return count

    def retry_delay(self, lane: str | None = None) -> float:
        """Capped exponential backoff after a lane's consecutive failed rounds."""
        failures = self._failures_in_a_row.get(lane, 0)
        if failures == 0:
            return 0.0
        return float(min(self._max_retry_delay_s, self._retry_delay_s * 2 ** (failures - 1)))

    async def _run(self, lane: str | None, *, housekeeping: bool) -> None:
        wake = self._wakes[lane]
        while not self._stopping:
            try:
                published, failed = await self._round(lane, wake)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, lane)
                log.warning("%s outbox relay: round failed, retrying: %r", self.service, exc)
                await asyncio.sleep(self.retry_delay(lane))
                continue
            if failed:
                await asyncio.sleep(self.retry_delay(lane))
                continue
            if published >= self._batch_size:
                continue  # more is waiting
            if housekeeping and time.monotonic() - self._last_housekeeping >= _HOUSEKEEPING_EVERY_S:
                await self._housekeeping()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # that arrives as the wake-up does, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await wake.wait()

    async def _round(self, lane: str | None, wake: asyncio.Event) -> tuple[int, bool]:
        wake.clear()  # a commit after this point wakes the next round
        published, failed = await self._run_lane_once(lane)
        if not failed:
            self._failures_in_a_row[lane] = 0
            if not any(self._failures_in_a_row.values()):
                self.last_error = None
            self.last_progress_at = time.time()
            if (health := self._healths.get(lane)) is not None:
                health.progress()
        elif (health := self._healths.get(lane)) is not None:
            health.failing(self.last_error or "publishing failed")
        return published, failed

    def _failed(self, exc: BaseException, lane: str | None) -> None:
        self._failures_in_a_row[lane] = self._failures_in_a_row.get(lane, 0) + 1
        self.last_error = repr(exc)
        if (health := self._healths.get(lane)) is not None:
            health.failing(exc)

    async def _housekeeping(self) -> None:
        """Refresh the backlog gauge; prune sent rows past the retention now and then."""
        self._last_housekeeping = time.monotonic()
        try:
            await self.backlog()
            if time.monotonic() - self._last_prune >= self._prune_every_s:
                self._last_prune = time.monotonic()
                await self._store.prune(self._retention)
        except Exception as exc:
            log.warning("%s outbox relay: housekeeping failed: %r", self.service, exc)

    async def run_once(self, destination: str | None = None) -> int:
        """Publish one batch (of `destination`'s rows; None: every row); returns
        how many rows were marked sent (:attr:`last_round_failed` says whether a
        publish failed)."""
        published, self.last_round_failed = await self._run_lane_once(destination)
        return published

    async def _run_lane_once(self, lane: str | None) -> tuple[int, bool]:
        """One round of a lane: (rows marked sent, whether a publish failed)."""
        async with self._store.claim(self._batch_size, lane) as claim:
            if claim is None:
                return 0, False
            groups: dict[tuple[str, str], list[PendingRow]] = defaultdict(list)
            for row in claim.rows:
                groups[row.partition_key, row.destination].append(row)
            sent: list[Hashable] = []
            set_aside: list[tuple[Hashable, str]] = []
            errors: list[BaseException] = []
            await asyncio.gather(*(self._publish_group(g, sent, set_aside, errors) for g in groups.values()))
            if sent:
                await claim.mark_sent(sent)
            if set_aside:
                await claim.set_aside(set_aside)
        if errors:
            self._failed(errors[0], lane)
        return len(sent), bool(errors)

    async def _publish_group(
        self,
        group: Sequence[PendingRow],
        sent: list[Hashable],
        set_aside: list[tuple[Hashable, str]],
        errors: list[BaseException],
    ) -> None:
        """One key's rows of one destination, in id order, as one batch (handed
        to the client in order, acks awaited together: a burst costs one round
        trip, not one per row); a batch that fails is published again whole
        next round (at-least-once, order kept)."""
        try:
            await self._publish_many(group)
        except _UNPUBLISHABLE:
            # Some row can never go out: one by one, to set it aside and keep the others.
            await self._one_by_one(group, sent, set_aside, errors)
            return
        except Exception as exc:
            self._publish_failed(group[0], exc, errors)
            return  # the rows wait for the next round, so none is overtaken
        OUTBOX_PUBLISHED.labels(self.service, group[0].destination).inc(len(group))
        sent.extend(row.handle for row in group)

    async def _one_by_one(
        self,
        run: Sequence[PendingRow],
        sent: list[Hashable],
        set_aside: list[tuple[Hashable, str]],
        errors: list[BaseException],
    ) -> bool:
        """Publish rows singly; False when one failed (and the rest must wait)."""
        for row in run:
            try:
                await self._publish_many([row])
            except _UNPUBLISHABLE as exc:
                log.error("%s outbox row %s cannot be published: %r", self.service, row.handle, exc)
                OUTBOX_SET_ASIDE.labels(self.service).inc()
                set_aside.append((row.handle, repr(exc)))
                continue
            except Exception as exc:
                self._publish_failed(row, exc, errors)
                return False
            OUTBOX_PUBLISHED.labels(self.service, row.destination).inc()
            sent.append(row.handle)
        return True

    def _publish_failed(self, row: PendingRow, exc: Exception, errors: list[BaseException]) -> None:
        OUTBOX_FAILURES.labels(self.service, row.destination).inc()
        log.warning(
            "%s outbox row %s: publish to %s failed: %r", self.service, row.handle, row.destination, exc
        )
        errors.append(exc)

    async def _publish_many(self, rows: Sequence[PendingRow]) -> None:
        """Rows of one destination, in order."""
        events = [(event_pb2.EventEnvelope.FromString(row.envelope), None) for row in rows]
        destination = rows[0].destination
        if destination == KAFKA:
            if self._kafka is None:
                # A wiring bug, not a bad row: keep it and retry (last_error shows it).
                raise RuntimeError(f"{self.service} outbox relay has no Kafka publisher")
            await self._kafka.publish_many(events)
        elif destination == NATS:
            if self._nats is None:
                raise RuntimeError(f"{self.service} outbox relay has no NATS publisher")
            await self._nats.publish_many(events)
        else:
            raise ValueError(f"unknown outbox destination {destination!r}")


# Errors no retry can cure: the row is set aside (failed_at, last_error).
_UNPUBLISHABLE = (NotRoutedError, ValueError, pb_message.DecodeError)
