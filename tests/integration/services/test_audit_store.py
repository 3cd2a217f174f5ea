"""The audit service on real servers: events published to tansu with the
platform's KafkaPublisher are appended by the service's consumer to the
hash-chained store in PostgreSQL, read back over gRPC; tampering done
directly in the database (as superuser) is found by VerifyChain; the
service's role cannot change records."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from trading.audit.v1 import audit_service_pb2 as pb
from trading.audit.v1 import audit_service_pb2_grpc as pb_grpc
from trading.audit.v1 import types_pb2 as types
from trading.common.v1 import event_pb2
from trading.common.v1 import types_pb2 as common_types
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.errors import error_details
from runtime.messaging import headers as h
from runtime.messaging import new_envelope
from runtime.messaging.base import DeadLetter
from runtime.messaging.kafka import KafkaDeadLetters, KafkaPublisher
from runtime.storage.postgres import TENANT_ROLE
from services.audit.adapters.postgres import AUDIT_ROLE
from services.audit.domain import GENESIS_HASH, chain_hash
from services.audit.main import make_spec
from services.audit.settings import AuditSettings
from tests.support.polling import eventually
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

T = TypeVar("T")
pytestmark = pytest.mark.integration


@dataclass
class Harness:
    stub: pb_grpc.AuditServiceAsyncStub
    publisher: KafkaPublisher
    group: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def audit(infra_settings: Settings) -> AsyncIterator[Harness]:
    """One running audit service for the module, with its own consumer group."""
    group = f"audit.test-{uuid.uuid4().hex[:8]}"
    spec = make_spec(AuditSettings(consumer_group=group))
    async with (
        running_service(spec, infra_settings) as address,
        service_channel(address, "audit") as channel,
        KafkaPublisher(infra_settings.kafka, event_registry(), client_id="test-producer") as publisher,
    ):
        yield Harness(pb_grpc.AuditServiceStub(channel), publisher, group)


def md(tenant: str) -> tuple[tuple[str, str], ...]:
    return user_md("audit", tenant)


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def order_event(tenant: str, order_id: str, version: int, correlation_id: str) -> event_pb2.EventEnvelope:
    """An OrderAccepted (or, for version > 2, an OrderCanceled) of one order."""
    order = execution_types.Order(order_id=order_id, symbol="BTC-USD", version=version)
    order.quantity.value = "1"
    order.created_at.GetCurrentTime()
    order.updated_at.GetCurrentTime()
    payload: execution_events.OrderAccepted | execution_events.OrderCanceled
    if version == 2:
        order.status = execution_types.ORDER_STATUS_ACCEPTED
        payload = execution_events.OrderAccepted(order_id=order_id, order=order)
    else:
        order.status = execution_types.ORDER_STATUS_CANCELED
        payload = execution_events.OrderCanceled(order_id=order_id, order=order)
    return new_envelope(payload, tenant_id=tenant, correlation_id=correlation_id, producer="test")


async def all_records(
    stub: pb_grpc.AuditServiceAsyncStub, tenant: str, **filters: object
) -> list[types.AuditRecord]:
    records: list[types.AuditRecord] = []
    token = ""
    while True:
        page = await stub.QueryEvents(
            pb.QueryEventsRequest(page_size=500, page_token=token, **filters),  # type: ignore[arg-type]
            metadata=md(tenant),
            timeout=10,
        )
        records.extend(page.records)
        token = page.next_page_token
        if not token:
            return records


async def stored(h: Harness, tenant: str, count: int) -> list[types.AuditRecord]:
    """Wait until the tenant's chain holds `count` records."""

    async def probe() -> list[types.AuditRecord] | None:
        records = await all_records(h.stub, tenant)
        return records if len(records) >= count else None

    return await eventually(probe, 30.0, f"{count} records of {tenant}")


async def seed(h: Harness, tenant: str, orders: int = 3) -> list[event_pb2.EventEnvelope]:
    """Two events per order (accepted, canceled), each order its own correlation id."""
    envelopes: list[event_pb2.EventEnvelope] = []
    for _ in range(orders):
        order_id = str(uuid.uuid4())
        correlation = f"corr-{uuid.uuid4().hex[:8]}"
        envelopes += [
            order_event(tenant, order_id, 2, correlation),
            order_event(tenant, order_id, 3, correlation),
        ]
    for envelope in envelopes:
        await h.publisher.publish(envelope)
    await stored(h, tenant, len(envelopes))
    return envelopes


async def sequence_of(h: Harness, tenant: str, event_id: str) -> int:
    """Where the store put an event (events of different orders travel on
    different partitions, so their order in the chain is the consumer's)."""
    return next(r.sequence for r in await all_records(h.stub, tenant) if r.event_id == event_id)


async def verify(h: Harness, tenant: str, **kwargs: int) -> pb.VerifyChainResponse:
    reply: pb.VerifyChainResponse = await h.stub.VerifyChain(
        pb.VerifyChainRequest(**kwargs), metadata=md(tenant), timeout=10
    )
    return reply


@pytest.fixture
def admin(pg_pool: asyncpg.Pool) -> asyncpg.Pool:
    """The session database as superuser: what an attacker with full rights has."""
    return pg_pool


async def tamper(admin: asyncpg.Pool, sql: str, *args: object) -> None:
    """Run `sql` as superuser with the append-only triggers switched off, as
    only a superuser can."""
    async with admin.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


# ------------------------------------------------------------------ storing


async def test_events_are_chained_in_order_and_hashes_follow_the_contract(audit: Harness) -> None:
    tenant = new_tenant()
    sent = await seed(audit, tenant)
    records = await all_records(audit.stub, tenant, include_raw=True)
    assert [r.sequence for r in records] == list(range(1, len(sent) + 1))
    assert {r.event_id for r in records} == {e.event_id for e in sent}
    prev = GENESIS_HASH
    for r in records:
        assert r.prev_hash == prev
        assert r.hash == chain_hash(prev, r.sequence, r.envelope_bytes)
        assert event_pb2.EventEnvelope.FromString(r.envelope_bytes) == r.envelope
        order_id = execution_events.OrderAccepted.FromString(r.envelope.payload.value).order_id
        assert (r.aggregate_type, r.aggregate_id) == ("order", order_id)
        prev = r.hash
    first = records[0]
    original = next(e for e in sent if e.event_id == first.event_id)
    assert first.envelope == original and first.correlation_id == original.correlation_id
    assert first.producer == "test" and first.recorded_at.seconds > 0


async def test_a_redelivered_event_is_stored_once_and_the_chain_is_unchanged(audit: Harness) -> None:
    tenant = new_tenant()
    sent = await seed(audit, tenant, orders=2)
    before = await verify(audit, tenant)
    assert before.ok and before.records_checked == len(sent)
    for envelope in sent:  # every event delivered again
        await audit.publisher.publish(envelope)
    marker = order_event(tenant, str(uuid.uuid4()), 2, "marker")
    await audit.publisher.publish(marker)
    # The marker went out after the redeliveries on the same tenant... but on
    # other partitions (keyed by order id): wait for it, then a little longer
    # for stragglers, and count.
    records = await stored(audit, tenant, len(sent) + 1)
    await asyncio.sleep(1.0)
    records = await all_records(audit.stub, tenant)
    assert len(records) == len(sent) + 1
    assert len({r.event_id for r in records}) == len(records)
    after = await verify(audit, tenant, to_sequence=len(sent))
    assert (
        after.ok and after.last_hash == before.last_hash and after.records_checked == before.records_checked
    )


async def test_a_poison_event_is_dead_lettered_and_the_rest_of_its_batch_stored(
    audit: Harness, infra_settings: Settings
) -> None:
    tenant, order_id = new_tenant(), str(uuid.uuid4())
    before = order_event(tenant, order_id, 2, "poison-test")
    # Decodes fine, but PostgreSQL text cannot hold a NUL character.
    poison = order_event(tenant, order_id, 3, "poison-test")
    poison.correlation_id = "nul\x00byte"
    after = order_event(tenant, order_id, 3, "poison-test")
    # One order: one partition, in this order, sent together (one batch).
    await audit.publisher.publish_many([(before, None), (poison, None), (after, None)])
    records = await stored(audit, tenant, 2)
    assert [r.event_id for r in records] == [before.event_id, after.event_id]
    reply = await verify(audit, tenant)
    assert reply.ok and reply.records_checked == 2
    topic = event_registry().route("trading.execution.v1.OrderCanceled").kafka_topic

    async def poison_letter() -> list[DeadLetter] | None:
        letters = await KafkaDeadLetters(audit.publisher, topics=[topic]).list(audit.group)
        return [x for x in letters if x.headers.get(h.EVENT_ID) == poison.event_id] or None

    (letter,) = await eventually(poison_letter, 30.0, "the poison event's dead letter")
    assert letter.reason == "handler_failed" and letter.attempts == 3 and letter.error
    assert event_pb2.EventEnvelope.FromString(letter.value) == poison
    assert letter.headers.get(h.EVENT_TYPE) == poison.event_type


# ------------------------------------------------------------------ querying


async def test_query_by_correlation_aggregate_type_and_time_with_paging(audit: Harness) -> None:
    tenant = new_tenant()
    sent = await seed(audit, tenant, orders=3)
    target = sent[2]  # the second order's acceptance
    order_id = execution_events.OrderAccepted.FromString(target.payload.value).order_id
    by_corr = await all_records(audit.stub, tenant, correlation_id=target.correlation_id)
    assert [r.event_id for r in by_corr] == [sent[2].event_id, sent[3].event_id]
    by_order = await all_records(audit.stub, tenant, aggregate_type="order", aggregate_id=order_id)
    assert [r.event_id for r in by_order] == [sent[2].event_id, sent[3].event_id]
    canceled = await all_records(audit.stub, tenant, event_type="trading.execution.v1.OrderCanceled")
    assert {r.event_id for r in canceled} == {e.event_id for e in sent[1::2]}
    # Time: [occurred_at of the 3rd event, +1 us past the 4th) holds the 3rd and 4th at least.
    start, end = Timestamp(), Timestamp()
    start.CopyFrom(sent[2].occurred_at)
    end.FromNanoseconds(sent[3].occurred_at.ToNanoseconds() + 1000)
    in_range = await all_records(audit.stub, tenant, time_range=common_types.TimeRange(start=start, end=end))
    assert {sent[2].event_id, sent[3].event_id} <= {r.event_id for r in in_range}
    assert all(start.ToNanoseconds() // 1000 <= r.occurred_at.ToNanoseconds() // 1000 for r in in_range)
    assert sent[0].event_id not in {r.event_id for r in in_range}
    # from_sequence
    tail = await all_records(audit.stub, tenant, from_sequence=5)
    assert [r.sequence for r in tail] == [5, 6]
    # Paging: pages of 4 over 6 records, no repeats, no gaps, raw only when asked.
    pages: list[list[types.AuditRecord]] = []
    token = ""
    while True:
        page = await audit.stub.QueryEvents(
            pb.QueryEventsRequest(page_size=4, page_token=token), metadata=md(tenant), timeout=10
        )
        pages.append(list(page.records))
        token = page.next_page_token
        if not token:
            break
    assert [[r.sequence for r in p] for p in pages] == [[1, 2, 3, 4], [5, 6]]
    assert all(not r.envelope_bytes for p in pages for r in p)
    # Another tenant sees none of it.
    assert await all_records(audit.stub, new_tenant()) == []


async def test_bad_input_is_invalid_argument_and_stores_nothing(audit: Harness) -> None:
    tenant = new_tenant()
    await seed(audit, tenant, orders=2)
    first = await audit.stub.QueryEvents(pb.QueryEventsRequest(page_size=1), metadata=md(tenant), timeout=10)
    assert first.next_page_token
    bad_requests: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        (
            "page_size",
            lambda: audit.stub.QueryEvents(pb.QueryEventsRequest(page_size=501), metadata=md(tenant)),
        ),
        (
            "page_token",
            lambda: audit.stub.QueryEvents(pb.QueryEventsRequest(page_token="@@@"), metadata=md(tenant)),
        ),
        (
            # A token used with other filters than it was issued for.
            "page_token",
            lambda: audit.stub.QueryEvents(
                pb.QueryEventsRequest(page_size=1, page_token=first.next_page_token, event_type="a.b.C"),
                metadata=md(tenant),
            ),
        ),
        (
            "aggregate",
            lambda: audit.stub.QueryEvents(pb.QueryEventsRequest(aggregate_id="x"), metadata=md(tenant)),
        ),
        (
            "correlation_id",
            lambda: audit.stub.QueryEvents(
                pb.QueryEventsRequest(correlation_id="bad id!"), metadata=md(tenant)
            ),
        ),
        (
            "event_type",
            lambda: audit.stub.QueryEvents(pb.QueryEventsRequest(event_type="nope"), metadata=md(tenant)),
        ),
        (
            "time_range",
            lambda: audit.stub.QueryEvents(
                pb.QueryEventsRequest(
                    time_range=common_types.TimeRange(start=Timestamp(seconds=10), end=Timestamp(seconds=5))
                ),
                metadata=md(tenant),
            ),
        ),
        (
            "range",
            lambda: audit.stub.VerifyChain(
                pb.VerifyChainRequest(from_sequence=5, to_sequence=2), metadata=md(tenant)
            ),
        ),
        (
            "aggregates",
            lambda: audit.stub.ReplayTenant(
                pb.ReplayTenantRequest(aggregates=[types.REPLAY_AGGREGATE_UNSPECIFIED]), metadata=md(tenant)
            ),
        ),
        (
            "max_differences",
            lambda: audit.stub.ReplayTenant(
                pb.ReplayTenantRequest(max_differences=1001), metadata=md(tenant)
            ),
        ),
    ]
    for what, call in bad_requests:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert error_details(caught.value).field_violations, what
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.stub.QueryEvents(pb.QueryEventsRequest(), timeout=10)  # no tenant (no context token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = await verify(audit, tenant)
    assert reply.ok and reply.records_checked == 4


# ------------------------------------------------------------------ tampering


async def test_an_altered_record_is_named_by_verify_chain(audit: Harness, admin: asyncpg.Pool) -> None:
    tenant = new_tenant()
    sent = await seed(audit, tenant, orders=3)
    assert (await verify(audit, tenant)).ok
    victim = sent[3]
    at = await sequence_of(audit, tenant, victim.event_id)
    forged = event_pb2.EventEnvelope()
    forged.CopyFrom(victim)
    forged.correlation_id = "forged-correlation"
    await tamper(
        admin,
        "UPDATE audit.events SET envelope_bytes = $1 WHERE event_id = $2",
        forged.SerializeToString(),
        victim.event_id,
    )
    reply = await verify(audit, tenant)
    assert not reply.ok
    found = reply.first_break
    assert found.sequence == at and found.event_id == victim.event_id
    assert found.reason == types.CHAIN_BREAK_REASON_HASH_MISMATCH
    assert found.expected_hash != found.actual_hash and len(found.actual_hash) == 32
    assert reply.records_checked == at and reply.last_sequence == at
    # The chain before the altered record still verifies, and so does the part
    # after it when verified on its own (its first link is then trusted).
    if at > 1:
        assert (await verify(audit, tenant, to_sequence=at - 1)).ok
    if at < len(sent):
        assert (await verify(audit, tenant, from_sequence=at + 1, to_sequence=len(sent))).ok
    # The break went out as an AuditChainBroken event, which audit itself stores.
    alerts = await eventually(
        lambda: all_records(audit.stub, tenant, event_type="trading.audit.v1.AuditChainBroken"),
        30.0,
        "the AuditChainBroken event",
    )
    assert alerts[0].aggregate_type == "audit_chain"


async def test_an_altered_indexed_column_is_found(audit: Harness, admin: asyncpg.Pool) -> None:
    tenant = new_tenant()
    sent = await seed(audit, tenant, orders=2)
    at = await sequence_of(audit, tenant, sent[1].event_id)
    await tamper(
        admin, "UPDATE audit.events SET correlation_id = 'hidden' WHERE event_id = $1", sent[1].event_id
    )
    reply = await verify(audit, tenant)
    assert (
        not reply.ok and reply.first_break.sequence == at and reply.first_break.event_id == sent[1].event_id
    )
    assert "correlation_id" in reply.first_break.message


async def test_a_deleted_record_is_found(audit: Harness, admin: asyncpg.Pool) -> None:
    tenant = new_tenant()
    await seed(audit, tenant, orders=3)
    # The third record of the chain (which event that is, is the consumer's choice).
    victim = (await all_records(audit.stub, tenant))[2]
    assert victim.sequence == 3
    await tamper(admin, "DELETE FROM audit.events WHERE event_id = $1", victim.event_id)
    reply = await verify(audit, tenant)
    assert not reply.ok
    assert (
        reply.first_break.sequence == 3 and reply.first_break.reason == types.CHAIN_BREAK_REASON_SEQUENCE_GAP
    )
    assert reply.records_checked == 2


# ------------------------------------------------------------------ the role


async def test_the_service_role_cannot_update_or_delete(audit: Harness, admin: asyncpg.Pool) -> None:
    tenant = new_tenant()
    sent = await seed(audit, tenant, orders=1)
    statements = [
        "UPDATE audit.events SET correlation_id = 'x' WHERE event_id = $1",
        "DELETE FROM audit.events WHERE event_id = $1",
    ]
    for role in (AUDIT_ROLE, TENANT_ROLE):
        for sql in statements:
            async with admin.acquire() as conn:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT set_config('app.tenant_id', $1, true), set_config('role', $2, true)",
                            tenant,
                            role,
                        )
                        await conn.execute(sql, sent[0].event_id)
    async with admin.acquire() as conn:
        # The role's rights, as PostgreSQL reports them.
        rights = {
            p: await conn.fetchval("SELECT has_table_privilege($1, 'audit.events', $2)", AUDIT_ROLE, p)
            for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
        }
        assert rights == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False}
        # Even the superuser (and the owner) is refused while the triggers are on.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit.events WHERE event_id = $1", sent[0].event_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("TRUNCATE audit.events")
    assert (await verify(audit, tenant)).ok


async def test_verify_chain_takes_any_uint64_bound(audit: Harness) -> None:
    """Bounds beyond int32 (found by schemathesis: 500 from PostgreSQL's int4
    inference) verify the chain up to its end."""
    tenant = new_tenant()
    sent = await seed(audit, tenant)
    for bound in (2_552_970_946, 2**63 - 1, 2**64 - 1):
        reply = await verify(audit, tenant, to_sequence=bound)
        assert reply.ok and reply.records_checked == len(sent), bound
