"""Dead letters on NATS: list the entries of the `DLQ` stream (all, or one
consumer's), re-drive one (original bytes and headers back to the source
subject) and delete one. Same shape as `runtime.messaging.kafka.deadletter`."""

from __future__ import annotations

from nats.js.errors import NotFoundError

from runtime.messaging import headers as h
from runtime.messaging.base import DeadLetter, Delivery
from runtime.messaging.deadletter import dead_letter_record
from runtime.messaging.nats.publisher import NatsPublisher
from runtime.messaging.nats.streams import DLQ_STREAM, DLQ_SUBJECT_PREFIX


def parse_source(source: str) -> tuple[str, str, int]:
    """(stream, subject, sequence) of an `x-dlq-source` value (stream "" for core NATS)."""
    stream, rest = source.split("/", 1)
    subject, seq = rest.rsplit("/", 1)
    return stream, subject, int(seq)


class NatsDeadLetters:
    """The dead letters in the DLQ `stream` (subjects `<subject_prefix><consumer>`),
    read by direct message gets (no consumer state) on the publisher's
    connection and re-driven through the publisher. Ids are DLQ stream sequences."""

    def __init__(
        self, publisher: NatsPublisher, *, stream: str = DLQ_STREAM, subject_prefix: str = DLQ_SUBJECT_PREFIX
    ) -> None:
        self._publisher = publisher
        self._js = publisher.jetstream
        self._stream = stream
        self._prefix = subject_prefix

    async def list(self, consumer: str | None = None, *, limit: int = 1000) -> list[DeadLetter]:
        """Dead letters (all, or only one consumer's), oldest first."""
        subject = self._prefix + (consumer if consumer is not None else ">")
        found: list[DeadLetter] = []
        seq = 1
        while len(found) < limit:
            try:
                raw = await self._js.get_msg(self._stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            if raw.seq is None:
                break
            found.append(dead_letter_record(str(raw.seq), raw.data or b"", dict(raw.headers or {})))
            seq = raw.seq + 1
        return found

    async def get(self, dlq_id: str) -> DeadLetter:
        """One dead letter by DLQ stream sequence."""
        raw = await self._js.get_msg(self._stream, seq=int(dlq_id))
        return dead_letter_record(str(dlq_id), raw.data or b"", dict(raw.headers or {}))

    async def redrive(self, letter: DeadLetter | str) -> Delivery:
        """Publish the original bytes and headers to the source subject again
        (through its stream when it came from one); returns where it landed.
        The DLQ entry stays until :meth:`delete`."""
        if isinstance(letter, str):
            letter = await self.get(letter)
        stream, subject, _ = parse_source(letter.source)
        headers = h.without_dlq(letter.headers)
        headers.pop(h.NATS_MSG_ID, None)
        if stream:
            # A fresh de-duplication id: the event id was used (and may still
            # be inside the duplicate window) by the original publish.
            headers[h.NATS_MSG_ID] = f"{headers.get(h.EVENT_ID, '')}:redrive:{self._stream}:{letter.id}"
        return await self._publisher.publish_raw(
            subject, letter.value, headers=headers, stream=stream or None
        )

    async def delete(self, letter: DeadLetter | str) -> None:
        """Remove an entry from the DLQ stream (NATS only: Kafka cannot delete single records)."""
        dlq_id = letter.id if isinstance(letter, DeadLetter) else letter
        await self._js.delete_msg(self._stream, int(dlq_id))
