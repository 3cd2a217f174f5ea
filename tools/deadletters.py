"""`tradingctl deadletters`: list and re-drive the dead letters of any consumer,
on either transport.

    tradingctl deadletters list [--transport kafka|nats] [--consumer NAME]
    tradingctl deadletters redrive ID --transport kafka|nats

Kafka dead letters live in `<topic>.dlq` (ids "topic.dlq/partition/offset");
NATS ones in the `DLQ` stream (ids are stream sequences; subjects are
`dlq.<consumer>`). Both are read through the same dead-letter API
(`runtime.messaging.{kafka,nats}.deadletter`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from runtime.config import Settings, get_settings
from runtime.contracts import event_registry
from runtime.messaging.base import DeadLetter
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.kafka.deadletter import KafkaDeadLetters
from runtime.messaging.nats import NatsPublisher
from runtime.messaging.nats.connect import connect_nats
from runtime.messaging.nats.deadletter import NatsDeadLetters
from runtime.security.principals import OPERATOR


def _print(letters: list[DeadLetter], transport: str) -> None:
    if not letters:
        print(f"{transport}: no dead letters")
    for letter in letters:
        print(
            f"{transport} {letter.id}  consumer={letter.consumer} reason={letter.reason} "
            f"attempts={letter.attempts} failed_at={letter.failed_at}\n"
            f"    source={letter.source} event_type={letter.headers.get('x-event-type', '?')}\n"
            f"    error={letter.error}"
        )


async def _kafka(settings: Settings, args: argparse.Namespace) -> int:
    """Kafka: every platform topic's `.dlq`."""
    async with KafkaPublisher(settings.kafka, event_registry(), client_id="tradingctl") as publisher:
        letters = KafkaDeadLetters(publisher, topics=event_registry().kafka_topics())
        if args.action == "list":
            _print(await letters.list(args.consumer), "kafka")
        else:
            landed = await letters.redrive(args.id)
            print(f"kafka: re-drove {args.id} to {landed.describe()}")
    return 0


async def _nats(settings: Settings, args: argparse.Namespace) -> int:
    client = await connect_nats(settings, OPERATOR, name="tradingctl")
    try:
        letters = NatsDeadLetters(NatsPublisher(client, event_registry()))
        if args.action == "list":
            _print(await letters.list(args.consumer), "nats")
        else:
            landed = await letters.redrive(args.id)
            if args.delete:
                await letters.delete(args.id)
            seq = f" (stream seq {landed.position})" if landed.stream else ""
            print(f"nats: re-drove DLQ #{args.id}{seq}")
    finally:
        await client.drain()
    return 0


def main(argv: list[str], settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradingctl deadletters", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="list dead letters")
    listing.add_argument("--transport", choices=["kafka", "nats", "all"], default="all")
    listing.add_argument("--consumer", help="only this consumer's dead letters")
    redrive = sub.add_parser("redrive", help="send one dead letter back to its source")
    redrive.add_argument("id")
    redrive.add_argument("--transport", choices=["kafka", "nats"], required=True)
    redrive.add_argument("--delete", action="store_true", help="nats: remove it from the DLQ afterwards")
    args = parser.parse_args(argv)
    settings = settings or get_settings()

    async def run() -> int:
        rc = 0
        if args.transport in ("kafka", "all"):
            rc |= await _kafka(settings, args)
        if args.transport == "nats" or (args.transport == "all" and args.consumer):
            rc |= await _nats(settings, args)
        return rc

    try:
        return asyncio.run(run())
    except Exception as exc:
        print(f"deadletters: {exc!r}", file=sys.stderr)
        return 1
