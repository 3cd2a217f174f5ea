"""The shapes both transports share: what a handler receives, the retry
policy, the dead-letter record and the publisher/subscriber protocols. Kafka
and NATS implement the same protocols so services can switch transport by
configuration, not by rewriting handlers."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import tenacity
from google.protobuf import message as pb_message

if TYPE_CHECKING:
    from trading.common.v1 import event_pb2, options_pb2


class Registry(Protocol):
    """What messaging needs of `runtime.contracts.EventRegistry`."""

    def route(self, event_type: str) -> options_pb2.EventRoute: ...

    def message_class(self, event_type: str) -> type[pb_message.Message]: ...

    def nats_subject(self, event_type: str, tenant_id: str, payload: pb_message.Message) -> str: ...

    def partition_key(self, event_type: str, tenant_id: str, payload: pb_message.Message) -> bytes | None: ...


class Transport(enum.StrEnum):
    KAFKA = "kafka"
    NATS = "nats"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a received message sits in its broker (for logs, DLQ records and
    re-drive). Kafka: topic/partition/offset. NATS: stream/subject/sequence
    (stream "" and sequence 0 for core NATS)."""

    transport: Transport
    destination: str  # topic or subject
    partition: int = -1
    position: int = 0  # Kafka offset or JetStream stream sequence
    stream: str = ""

    def describe(self) -> str:
        """The `x-dlq-source` form: "topic/partition/offset" or "stream/subject/seq"."""
        if self.transport is Transport.KAFKA:
            return f"{self.destination}/{self.partition}/{self.position}"
        return f"{self.stream}/{self.destination}/{self.position}"


@dataclass(frozen=True, slots=True)
class Event:
    """What a handler receives: the decoded envelope, its typed payload, the
    transport headers (trace context included) and where it came from."""

    envelope: event_pb2.EventEnvelope
    payload: pb_message.Message
    headers: Mapping[str, str]
    delivery: Delivery
    # 1 on first delivery; counts redeliveries and in-process retries.
    attempt: int = 1


# A handler succeeds by returning; raising means "retry, then dead-letter".
Handler = Callable[[Event], Awaitable[None]]


class DeadLetterReason(enum.StrEnum):
    """Why a message was dead-lettered (`x-dlq-reason`)."""

    UNDECODABLE = "undecodable"  # bytes are not an envelope, or the payload does not parse
    UNKNOWN_EVENT_TYPE = "unknown_event_type"  # no contract declares the event type
    HANDLER_FAILED = "handler_failed"  # the handler raised on every attempt


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing handler is tried before its message is
    dead-lettered, and how long to wait in between (exponential backoff with
    jitter, tenacity's `wait_exponential_jitter`). Kafka waits in process;
    JetStream hands the wait to the server as a nak delay."""

    max_attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    jitter_s: float = 0.05
    _wait: tenacity.wait.wait_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        wait = tenacity.wait_exponential_jitter(
            multiplier=self.initial_backoff_s, max=self.max_backoff_s, jitter=self.jitter_s
        )
        object.__setattr__(self, "_wait", wait)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = attempt
        return float(self._wait(state))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message: the original bytes and headers as they
    arrived, plus why and where from."""

    id: str  # position in the DLQ: "dlq-topic/partition/offset" or the DLQ stream sequence
    consumer: str
    reason: str
    error: str
    attempts: int
    source: str  # Delivery.describe() of the original message
    failed_at: str  # RFC 3339 UTC
    value: bytes
    headers: Mapping[str, str]  # original headers, without the x-dlq-* ones
    key: bytes | None = None  # Kafka key of the original message


class Publisher(Protocol):
    """Publishes envelopes to wherever the registry routes their event type
    (what code that only publishes needs). `KafkaPublisher` and
    `NatsPublisher` share more: `ping`, `publish_many`, `destination_of`, and
    `publish_raw(destination, data, *, headers, ...) -> Delivery` for bytes as
    they are (dead letters, re-drive), whose routing keywords differ (Kafka
    key and partition, NATS stream)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self, envelope: event_pb2.EventEnvelope, *, payload: pb_message.Message | None = None
    ) -> None: ...


class Subscriber(Protocol):
    """A running consumer: decodes, calls the handler, acks/commits after
    success, retries and dead-letters failures."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class DeadLetters(Protocol):
    """A transport's dead letters (`KafkaDeadLetters`, `NatsDeadLetters`):
    list them, read one, send one back to where it came from."""

    async def list(self, consumer: str | None = None, *, limit: int = 1000) -> list[DeadLetter]: ...

    async def get(self, dlq_id: str) -> DeadLetter: ...

    async def redrive(self, letter: DeadLetter | str) -> Delivery: ...


class NotRoutedError(LookupError):
    """The event type is not published on this transport (its EventRoute has
    no Kafka topic / NATS subject)."""
