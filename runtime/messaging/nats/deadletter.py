"""Dead letters on NATS: list a consumer's entries in the `DLQ` stream and
re-drive one (original bytes and headers back to the source subject)."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from runtime.messaging import headers as h
from runtime.messaging.base import DeadLetter
from runtime.messaging.deadletter import dead_letter_record
from runtime.messaging.nats.streams import DLQ_STREAM, DLQ_SUBJECT_PREFIX


def parse_source(source: str) -> tuple[str, str, int]:
    """(stream, subject, sequence) of an `x-dlq-source` value (stream "" for core NATS)."""
    stream, rest = source.split("/", 1)
    subject, seq = rest.rsplit("/", 1)
    return stream, subject, int(seq)


class NatsDeadLetters:
    """Reads the DLQ stream by subject (direct message gets, no consumer
    state) and re-drives entries. Ids are DLQ stream sequences."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        stream: str = DLQ_STREAM,
        subject_prefix: str = DLQ_SUBJECT_PREFIX,
        js_timeout_s: float = 5.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=js_timeout_s)
        self._stream = stream
        self._prefix = subject_prefix

    async def list(self, consumer: str, *, limit: int = 1000) -> list[DeadLetter]:
        """Dead letters of one consumer, oldest first."""
        subject = self._prefix + consumer
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

    async def get(self, dlq_id: str | int) -> DeadLetter:
        """One dead letter by DLQ stream sequence."""
        raw = await self._js.get_msg(self._stream, seq=int(dlq_id))
        return dead_letter_record(str(dlq_id), raw.data or b"", dict(raw.headers or {}))

    async def redrive(self, letter: DeadLetter | str | int, *, delete: bool = False) -> int | None:
        """Publish the original bytes and headers to the source subject again
        (through its stream when it came from one; returns the new stream
        sequence). With `delete`, the DLQ entry is removed afterwards."""
        if not isinstance(letter, DeadLetter):
            letter = await self.get(letter)
        stream, subject, _ = parse_source(letter.source)
        headers = h.without_dlq(letter.headers)
        headers.pop(h.NATS_MSG_ID, None)
        new_seq: int | None = None
        if stream:
            # A fresh de-duplication id: the event id was used (and may still
            # be inside the duplicate window) by the original publish.
            headers[h.NATS_MSG_ID] = f"{headers.get(h.EVENT_ID, '')}:redrive:{self._stream}:{letter.id}"
            ack = await self._js.publish(subject, letter.value, stream=stream, headers=headers)
            new_seq = ack.seq
        else:
            await self._nc.publish(subject, letter.value, headers=headers)
            await self._nc.flush()
        if delete:
            await self._js.delete_msg(self._stream, int(letter.id))
        return new_seq
