"""`tradingctl deadletters` lists a consumer's dead letters and re-drives one,
on real tansu."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging import RetryPolicy
from runtime.messaging.kafka import KafkaDeadLetters, KafkaPublisher, KafkaSubscriber
from runtime.messaging.testing import EventCollector, wait_dead_letters
from tools import deadletters

TICKS = "trading.marketdata.ticks"


async def test_list_and_redrive_a_kafka_dead_letter(
    infra_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"cli-{uuid.uuid4().hex[:8]}"
    registry = event_registry()
    async with KafkaPublisher(infra_settings.kafka, registry) as publisher:
        subscriber = KafkaSubscriber(
            infra_settings.kafka,
            registry,
            EventCollector(),
            group=group,
            dead_letters=publisher,
            event_types=["trading.marketdata.v1.Tick"],
            retry=RetryPolicy(max_attempts=1),
        )
        await subscriber.start()
        try:
            await subscriber.wait_assigned()
            await publisher.publish_raw(TICKS, b"\x00not an envelope", key=group.encode())
            letters = KafkaDeadLetters(publisher, topics=[TICKS])

            async def dead_letters(count: int) -> list[str]:
                return [letter.id for letter in await wait_dead_letters(letters, group, count)]

            (first,) = await dead_letters(1)
            # The CLI runs its own event loop: call it from a worker thread.
            listed = await asyncio.to_thread(
                deadletters.main, ["list", "--transport", "kafka", "--consumer", group], infra_settings
            )
            out = capsys.readouterr().out
            assert listed == 0
            assert first in out and "reason=undecodable" in out and f"consumer={group}" in out

            redriven = await asyncio.to_thread(
                deadletters.main, ["redrive", first, "--transport", "kafka"], infra_settings
            )
            assert redriven == 0
            # Back in the source topic, the same bytes are consumed (and, still
            # undecodable, dead-lettered again): the re-drive really happened.
            ids = await dead_letters(2)
            assert ids[0] == first and ids[1] != first
        finally:
            await subscriber.stop()
