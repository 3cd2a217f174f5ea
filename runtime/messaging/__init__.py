"""Event messaging on Kafka and NATS, one shape for both transports.

    from runtime.messaging import new_envelope
    from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber
    from runtime.messaging.nats import JetStreamSubscriber, NatsPublisher, NatsSubscriber

Every event travels as a `trading.common.v1.EventEnvelope` (protobuf bytes),
with its facts and the W3C trace context copied into transport headers
(`runtime.messaging.headers`). Routing (topic, key, subject) comes from the
event registry (`runtime.contracts.event_registry()`). Handlers receive an
`Event`; acks/commits follow success; failures are retried per `RetryPolicy`
and then dead-lettered (`<topic>.dlq` on Kafka, stream `DLQ` on NATS).

Both broker packages have the same shape: `publisher` (`publish`,
`publish_many`, `publish_raw` -> `Delivery`), `subscriber` (handler,
`dead_letters` publisher, `retry`), `deadletter` (`list`, `get`,
`redrive`), `telemetry` (a received message's `Delivery`, CONSUMER span and
lag; the shared metric families are `runtime.messaging.telemetry`) and
`testing` (`consuming(subscriber)`: started and ready to receive). NATS has
a core (`NatsSubscriber`) and a JetStream (`JetStreamSubscriber`)
subscriber, and `live`: the per-call subscriptions of streaming RPCs and
other live views (`live_subscription`, `ordered_subscription`), with the
same tracing and metrics. Every subscription of the platform goes through
these modules. `background` publishes off the caller's path (batched, in
order, bounded) where a lost copy is tolerable.
"""

from runtime.messaging.base import (
    DeadLetter,
    DeadLetterReason,
    DeadLetters,
    Delivery,
    Event,
    Handler,
    NotRoutedError,
    Publisher,
    Registry,
    RetryPolicy,
    Subscriber,
    Transport,
)
from runtime.messaging.envelope import (
    EnvelopeError,
    PayloadMismatchError,
    UndecodableEnvelopeError,
    UnknownEventTypeError,
    decode_envelope,
    event_route_of,
    new_envelope,
    unpack,
    uuid7,
)

__all__ = [
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetters",
    "Delivery",
    "EnvelopeError",
    "Event",
    "Handler",
    "NotRoutedError",
    "PayloadMismatchError",
    "Publisher",
    "Registry",
    "RetryPolicy",
    "Subscriber",
    "Transport",
    "UndecodableEnvelopeError",
    "UnknownEventTypeError",
    "decode_envelope",
    "event_route_of",
    "new_envelope",
    "unpack",
    "uuid7",
]
