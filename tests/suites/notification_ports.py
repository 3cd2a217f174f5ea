"""The contract of notification's storage port (services.notification.ports.WebhookStore),
run against each adapter: ``TestMemoryWebhookStore`` (unit) and
``TestPostgresWebhookStore`` (integration) subclass :class:`WebhookStoreSuite`
and provide its ``store`` fixture."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from runtime.messaging import uuid7
from runtime.outbox import OutboxRow
from services.notification.ports import DeadLetterRow, DuplicateIdError, WebhookRow, WebhookStore

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ORDERS = "trading.execution.v1.OrderStatusChanged"
POSITIONS = "trading.portfolio.v1.PositionChanged"


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def webhook(*event_types: str, url: str = "https://hooks.example/x") -> WebhookRow:
    return WebhookRow(
        webhook_id=str(uuid7()),
        url=url,
        event_types=tuple(event_types),
        description="test hook",
        secret_sealed=b"sealed",
        secret_prefix="whsec_ab",
        created_at=T0,
    )


def letter(webhook_id: str, *, event_id: str = "", dlq_seq: int | None = None) -> DeadLetterRow:
    return DeadLetterRow(
        dead_letter_id=str(uuid7()),
        webhook_id=webhook_id,
        delivery_id=str(uuid7()),
        url="https://hooks.example/x",
        event_id=event_id or str(uuid7()),
        event_type=ORDERS,
        attempts=6,
        last_error="HTTP 500",
        last_http_status=500,
        first_attempt_at=T0,
        last_attempt_at=T0 + timedelta(minutes=1),
        dead_lettered_at=T0 + timedelta(minutes=1),
        envelope=b"envelope-bytes",
        dlq_seq=dlq_seq,
    )


class WebhookStoreSuite:
    """Tenancy, paging, fan-out idempotency and the dead letters' life cycle."""

    async def test_a_webhook_reads_back_as_stored(self, store: WebhookStore) -> None:
        t, hook = tenant(), webhook(ORDERS, POSITIONS)
        await store.create_webhook(t, hook)
        assert await store.get_webhook(t, hook.webhook_id) == hook
        assert await store.get_webhook(t, str(uuid7())) is None

    async def test_another_tenant_sees_nothing_and_deletes_nothing(self, store: WebhookStore) -> None:
        a, b, hook = tenant(), tenant(), webhook()
        await store.create_webhook(a, hook)
        dead = letter(hook.webhook_id)
        assert await store.add_dead_letter(a, dead)
        assert await store.get_webhook(b, hook.webhook_id) is None
        assert await store.list_webhooks(b, 10, None) == []
        assert await store.webhooks_for(b, ORDERS) == []
        assert await store.list_dead_letters(b, 10, None, None) == []
        assert await store.take_dead_letter(b, dead.dead_letter_id) is None
        assert await store.delete_webhook(b, hook.webhook_id) is None
        # B's dead letter for A's webhook has no webhook in B: refused.
        assert not await store.add_dead_letter(b, letter(hook.webhook_id))
        assert await store.get_webhook(a, hook.webhook_id) == hook
        assert [d.dead_letter_id for d in await store.list_dead_letters(a, 10, None, None)] == [
            dead.dead_letter_id
        ]

    async def test_the_same_id_in_another_tenant_is_another_webhook(self, store: WebhookStore) -> None:
        a, b, hook = tenant(), tenant(), webhook()
        await store.create_webhook(a, hook)
        await store.create_webhook(b, hook)
        assert await store.delete_webhook(a, hook.webhook_id) == []
        assert await store.get_webhook(b, hook.webhook_id) == hook

    async def test_a_stored_id_cannot_be_stored_again(self, store: WebhookStore) -> None:
        t, hook = tenant(), webhook()
        await store.create_webhook(t, hook)
        with pytest.raises(DuplicateIdError):
            await store.create_webhook(t, hook)
        dead = letter(hook.webhook_id)
        assert await store.add_dead_letter(t, dead)
        with pytest.raises(DuplicateIdError):
            await store.add_dead_letter(t, dead)

    async def test_bad_ids_and_an_empty_tenant_are_value_errors(self, store: WebhookStore) -> None:
        with pytest.raises(ValueError):
            await store.get_webhook(tenant(), "not-a-uuid")
        with pytest.raises(ValueError):
            await store.list_webhooks(tenant(), 10, "not-a-uuid")
        with pytest.raises(ValueError):
            await store.list_webhooks("", 10, None)

    async def test_webhooks_list_newest_first_in_pages(self, store: WebhookStore) -> None:
        t = tenant()
        hooks = [webhook() for _ in range(5)]
        for hook in hooks:
            await store.create_webhook(t, hook)
        newest_first = [h.webhook_id for h in reversed(hooks)]
        first = await store.list_webhooks(t, 2, None)
        second = await store.list_webhooks(t, 2, first[-1].webhook_id)
        third = await store.list_webhooks(t, 2, second[-1].webhook_id)
        assert [h.webhook_id for h in first + second + third] == newest_first
        assert await store.list_webhooks(t, 2, third[-1].webhook_id) == []

    async def test_webhooks_for_an_event_type_oldest_first(self, store: WebhookStore) -> None:
        t = tenant()
        every, orders, positions = webhook(), webhook(ORDERS), webhook(POSITIONS)
        for hook in (every, orders, positions):
            await store.create_webhook(t, hook)
        assert await store.webhooks_for(t, ORDERS) == [every, orders]
        assert await store.webhooks_for(t, POSITIONS) == [every, positions]

    async def test_a_fanned_out_event_gets_no_webhooks_again(self, store: WebhookStore) -> None:
        t, other, hook = tenant(), tenant(), webhook()
        await store.create_webhook(t, hook)
        await store.create_webhook(other, hook)
        event_id = str(uuid7())
        await store.fanned_out(t, event_id)
        await store.fanned_out(t, event_id)  # idempotent
        assert await store.webhooks_for(t, ORDERS, event_id=event_id) == []
        assert await store.webhooks_for(t, ORDERS, event_id=str(uuid7())) == [hook]
        assert await store.webhooks_for(other, ORDERS, event_id=event_id) == [hook]  # per tenant

    async def test_pruning_forgets_only_older_records(self, store: WebhookStore) -> None:
        t, hook = tenant(), webhook()
        await store.create_webhook(t, hook)
        old, new = str(uuid7()), str(uuid7())
        await store.fanned_out(t, old)
        await store.fanned_out(t, new, prune_before=datetime.now(UTC) - timedelta(hours=1))
        assert await store.webhooks_for(t, ORDERS, event_id=old) == []
        await store.fanned_out(t, new, prune_before=datetime.now(UTC) + timedelta(hours=1))
        assert await store.webhooks_for(t, ORDERS, event_id=old) == [hook]
        assert await store.webhooks_for(t, ORDERS, event_id=new) == [hook]

    async def test_dead_letters_list_newest_first_per_webhook(self, store: WebhookStore) -> None:
        t, one, two = tenant(), webhook(), webhook()
        await store.create_webhook(t, one)
        await store.create_webhook(t, two)
        letters = [letter(one.webhook_id), letter(two.webhook_id), letter(one.webhook_id)]
        for dead in letters:
            assert await store.add_dead_letter(t, dead)
        everything = await store.list_dead_letters(t, 10, None, None)
        assert everything == list(reversed(letters))
        page = await store.list_dead_letters(t, 1, None, one.webhook_id)
        rest = await store.list_dead_letters(t, 10, page[0].dead_letter_id, one.webhook_id)
        assert page + rest == [letters[2], letters[0]]

    async def test_a_dead_letter_of_a_deleted_webhook_is_not_stored(self, store: WebhookStore) -> None:
        t, hook = tenant(), webhook()
        failed = "trading.notification.v1.WebhookDeliveryFailed"
        rows = [OutboxRow(t, str(uuid7()), failed, "kafka", "k", b"e")]
        assert not await store.add_dead_letter(t, letter(hook.webhook_id), events=rows)
        assert await store.list_dead_letters(t, 10, None, None) == []

    async def test_deleting_a_webhook_drops_its_dead_letters(self, store: WebhookStore) -> None:
        t, hook, kept = tenant(), webhook(), webhook()
        await store.create_webhook(t, hook)
        await store.create_webhook(t, kept)
        with_seq, without_seq = letter(hook.webhook_id, dlq_seq=7), letter(hook.webhook_id)
        other = letter(kept.webhook_id, dlq_seq=8)
        for dead in (with_seq, without_seq, other):
            assert await store.add_dead_letter(t, dead)
        await store.set_dlq_seq(t, without_seq.dead_letter_id, 9)
        assert sorted(await store.delete_webhook(t, hook.webhook_id) or []) == [7, 9]
        assert await store.get_webhook(t, hook.webhook_id) is None
        assert await store.list_dead_letters(t, 10, None, None) == [other]
        assert await store.delete_webhook(t, hook.webhook_id) is None

    async def test_a_dead_letter_is_taken_once(self, store: WebhookStore) -> None:
        t, hook = tenant(), webhook()
        await store.create_webhook(t, hook)
        dead = letter(hook.webhook_id)
        await store.add_dead_letter(t, dead)
        await store.set_dlq_seq(t, dead.dead_letter_id, 3)
        taken = await asyncio.gather(*(store.take_dead_letter(t, dead.dead_letter_id) for _ in range(3)))
        assert [x for x in taken if x is not None] == [replace(dead, dlq_seq=3)]
        assert await store.list_dead_letters(t, 10, None, None) == []

    async def test_a_failed_take_keeps_the_dead_letter(self, store: WebhookStore) -> None:
        t, hook = tenant(), webhook()
        await store.create_webhook(t, hook)
        dead = letter(hook.webhook_id)
        await store.add_dead_letter(t, dead)
        with pytest.raises(RuntimeError):
            async with store.taking_dead_letter(t, dead.dead_letter_id) as held:
                assert held == dead
                raise RuntimeError("publish failed")
        assert await store.list_dead_letters(t, 10, None, None) == [dead]

    async def test_a_racing_take_waits_and_then_finds_none(self, store: WebhookStore) -> None:
        t, hook = tenant(), webhook()
        await store.create_webhook(t, hook)
        dead = letter(hook.webhook_id)
        await store.add_dead_letter(t, dead)
        async with store.taking_dead_letter(t, dead.dead_letter_id) as held:
            assert held == dead
            racing = asyncio.create_task(store.take_dead_letter(t, dead.dead_letter_id))
            await asyncio.sleep(0.05)
            assert not racing.done()  # waits for the first take's outcome
        assert await racing is None
