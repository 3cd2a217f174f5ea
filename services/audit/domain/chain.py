"""The hash chain and what a record holds: pure, no I/O, no clock.

- The hash chain (proto/trading/audit/v1/types.proto states the rule):
  ``hash(n) = SHA-256(prev_hash(n) || uint64_be(sequence(n)) || envelope_bytes(n))``,
  ``prev_hash(1)`` = 32 zero bytes. :class:`ChainVerifier` walks a chain
  record by record and names the first one that breaks it.
- Aggregates: which entity an event is about ("order" + order id, "position"
  + symbol, ...), derived from the payload by one table, :data:`AGGREGATES`.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2

from runtime.messaging import EnvelopeError, decode_envelope, unpack
from runtime.messaging.base import Registry

# ------------------------------------------------------------------ the hash chain

HASH_SIZE: Final = 32
# prev_hash of the first record of every chain.
GENESIS_HASH: Final = bytes(HASH_SIZE)
# The chain of events without a tenant (market data and other platform-wide events).
PLATFORM_CHAIN: Final = ""


def chain_hash(prev_hash: bytes, sequence: int, envelope_bytes: bytes) -> bytes:
    """The hash of record `sequence` whose predecessor's hash is `prev_hash`."""
    digest = hashlib.sha256(prev_hash)
    digest.update(struct.pack(">Q", sequence))
    digest.update(envelope_bytes)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Link:
    """Where a new record goes in its chain: its sequence and both hashes."""

    sequence: int
    prev_hash: bytes
    hash: bytes


def chain_links(head_sequence: int, head_hash: bytes, envelopes: Iterable[bytes]) -> list[Link]:
    """The links of records appended, in order, after a chain's head (its last
    sequence and hash; 0 and :data:`GENESIS_HASH` for an empty chain): the
    same rule as :func:`chain_hash`, one record after the other."""
    links: list[Link] = []
    sequence, prev_hash = head_sequence, head_hash
    for data in envelopes:
        sequence += 1
        digest = chain_hash(prev_hash, sequence, data)
        links.append(Link(sequence, prev_hash, digest))
        prev_hash = digest
    return links


def canonical_bytes(envelope: event_pb2.EventEnvelope) -> bytes:
    """The bytes stored and hashed for an envelope: its deterministic
    serialization. For every producer of this platform (protobuf serializers)
    these equal the bytes received; an envelope from a newer schema keeps its
    unknown fields."""
    return envelope.SerializeToString(deterministic=True)


# ------------------------------------------------------------------ aggregates

# Event type -> (aggregate type, payload field path holding its id). "tenant"
# as path means the envelope's tenant. Event types not listed fall back to
# their partition key (see aggregate_of).
AGGREGATES: Final[Mapping[str, tuple[str, str]]] = {
    "trading.execution.v1.OrderAccepted": ("order", "order_id"),
    "trading.execution.v1.OrderRejected": ("order", "order_id"),
    "trading.execution.v1.OrderCancelRequested": ("order", "order_id"),
    "trading.execution.v1.OrderCanceled": ("order", "order_id"),
    "trading.execution.v1.OrderExpired": ("order", "order_id"),
    "trading.execution.v1.OrderFillReported": ("order", "order_id"),
    "trading.execution.v1.OrderStatusChanged": ("order", "order_id"),
    "trading.portfolio.v1.PositionChanged": ("position", "symbol"),
    "trading.portfolio.v1.PortfolioSnapshot": ("portfolio", "tenant"),
    "trading.marketdata.v1.Tick": ("instrument", "symbol"),
    "trading.marketdata.v1.TickRejected": ("instrument", "symbol"),
    # Core NATS only (never on Kafka, so never audited); listed so every type has a rule.
    "trading.marketdata.v1.TickBatch": ("tick_batch", "tenant"),
    "trading.features.v1.FeatureVectorComputed": ("instrument", "symbol"),
    "trading.decision.v1.SignalGenerated": ("strategy", "signal.strategy_id"),
    "trading.decision.v1.OrderIntentCreated": ("strategy", "strategy_id"),
    "trading.decision.v1.StrategyUpdated": ("strategy", "strategy_id"),
    "trading.risk.v1.OrderRiskRejected": ("risk_check", "check_id"),
    "trading.risk.v1.RiskAlert": ("risk_alert", "alert_id"),
    "trading.risk.v1.LimitsChanged": ("risk_limits", "tenant"),
    "trading.risk.v1.TradingStateChanged": ("trading_state", "tenant"),
    "trading.identity.v1.TenantCreated": ("tenant", "tenant_id"),
    "trading.identity.v1.UserCreated": ("user", "user_id"),
    "trading.identity.v1.UserRolesChanged": ("user", "user_id"),
    "trading.identity.v1.ApiKeyCreated": ("api_key", "api_key_id"),
    "trading.identity.v1.ApiKeyRevoked": ("api_key", "api_key_id"),
    "trading.notification.v1.WebhookDelivered": ("webhook", "webhook_id"),
    "trading.notification.v1.WebhookDeliveryFailed": ("webhook", "webhook_id"),
    "trading.audit.v1.AuditChainBroken": ("audit_chain", "tenant"),
    "trading.analytics.v1.CorrelationClustersComputed": ("correlation_clusters", "tenant"),
}


def _field(payload: pb_message.Message, path: str) -> str:
    value: object = payload
    for name in path.split("."):
        value = getattr(value, name, "")
    return value if isinstance(value, str) else ""


def aggregate_of(
    envelope: event_pb2.EventEnvelope, payload: pb_message.Message, partition_key: str = ""
) -> tuple[str, str]:
    """(aggregate type, aggregate id) of an event; never fails. Unlisted types
    use their partition key field ("order_id" -> ("order", id)); anything
    without an id is about the tenant as a whole."""
    aggregate_type, path = AGGREGATES.get(envelope.event_type, ("", ""))
    if not path and partition_key and partition_key != "tenant":
        aggregate_type, path = partition_key.removesuffix("_id"), partition_key
    value = envelope.tenant_id if path == "tenant" else _field(payload, path) if path else ""
    if not aggregate_type or not value:
        return "tenant", envelope.tenant_id
    return aggregate_type, value


@dataclass(frozen=True, slots=True)
class RecordColumns:
    """The columns of a stored record that are derived from its envelope."""

    tenant_id: str
    event_id: str
    event_type: str
    correlation_id: str
    causation_id: str
    producer: str
    occurred_at: datetime
    aggregate_type: str
    aggregate_id: str


def timestamp_to_datetime(value: object) -> datetime:
    """A protobuf Timestamp as an aware datetime, truncated to microseconds
    (what PostgreSQL keeps)."""
    return value.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def columns_of(
    envelope: event_pb2.EventEnvelope, payload: pb_message.Message, partition_key: str = ""
) -> RecordColumns:
    aggregate_type, aggregate_id = aggregate_of(envelope, payload, partition_key)
    return RecordColumns(
        tenant_id=envelope.tenant_id,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
        producer=envelope.producer,
        occurred_at=timestamp_to_datetime(envelope.occurred_at),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
    )


# ------------------------------------------------------------------ verification


class BreakReason(enum.IntEnum):
    """trading.audit.v1.ChainBreakReason (same numbers)."""

    HASH_MISMATCH = 1
    PREV_HASH_MISMATCH = 2
    SEQUENCE_GAP = 3


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as read back from the store."""

    columns: RecordColumns
    sequence: int
    envelope_bytes: bytes
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place where a chain does not hold."""

    sequence: int
    event_id: str
    reason: BreakReason
    expected_hash: bytes
    actual_hash: bytes
    message: str


class ChainVerifier:
    """Checks a chain's records in sequence order, one :meth:`check` call per
    record, and stops at the first break.

    Starting at sequence 1, the first record must link to :data:`GENESIS_HASH`;
    starting later (`from_sequence` > 1), the first record's prev_hash is
    trusted as the link to what came before. Besides the hashes, every column
    derived from the envelope must match the hashed envelope bytes, so an
    edit of an indexed column (say, a correlation id) is found too.
    """

    def __init__(self, registry: Registry, from_sequence: int = 0) -> None:
        self._registry = registry
        self.expected_sequence = max(from_sequence, 1)
        self._previous_hash: bytes | None = GENESIS_HASH if self.expected_sequence == 1 else None
        self.checked = 0
        self.first_sequence = 0
        self.last_sequence = 0
        # Hash of the last record that verified.
        self.last_hash = b""
        self.broken: ChainBreak | None = None

    def check(self, record: StoredRecord) -> ChainBreak | None:
        """Verify the next record; returns the break (also kept in `broken`) or None."""
        if self.broken is not None:
            return self.broken
        if record.sequence != self.expected_sequence:
            # Sequences come back ascending: a larger one means records are missing.
            missing = self.expected_sequence
            return self._break(
                ChainBreak(
                    missing,
                    "",
                    BreakReason.SEQUENCE_GAP,
                    self._previous_hash or b"",
                    record.prev_hash,
                    f"record {missing} is missing (next stored record is {record.sequence}): "
                    "a record was deleted",
                )
            )
        self.checked += 1
        self.first_sequence = self.first_sequence or record.sequence
        self.last_sequence = record.sequence
        event_id = record.columns.event_id
        if self._previous_hash is not None and record.prev_hash != self._previous_hash:
            return self._break(
                ChainBreak(
                    record.sequence,
                    event_id,
                    BreakReason.PREV_HASH_MISMATCH,
                    self._previous_hash,
                    record.prev_hash,
                    f"record {record.sequence} (event {event_id}) does not link to record "
                    f"{record.sequence - 1}: a record was altered, inserted or reordered",
                )
            )
        computed = chain_hash(record.prev_hash, record.sequence, record.envelope_bytes)
        if computed != record.hash:
            return self._break(
                ChainBreak(
                    record.sequence,
                    event_id,
                    BreakReason.HASH_MISMATCH,
                    computed,
                    record.hash,
                    f"record {record.sequence} (event {event_id}): stored hash is not the hash "
                    "of its contents: the record was altered",
                )
            )
        mismatch = self._column_mismatch(record)
        if mismatch:
            return self._break(
                ChainBreak(
                    record.sequence,
                    event_id,
                    BreakReason.HASH_MISMATCH,
                    computed,
                    record.hash,
                    f"record {record.sequence} (event {event_id}): {mismatch}: the record was altered",
                )
            )
        self._previous_hash = record.hash
        self.last_hash = record.hash
        self.expected_sequence = record.sequence + 1
        return None

    def _break(self, found: ChainBreak) -> ChainBreak:
        self.broken = found
        return found

    def _column_mismatch(self, record: StoredRecord) -> str:
        try:
            envelope = decode_envelope(record.envelope_bytes)
            payload = unpack(envelope, self._registry)
        except EnvelopeError as exc:
            return f"envelope bytes do not decode ({exc})"
        partition_key = self._registry.route(envelope.event_type).partition_key
        derived = columns_of(envelope, payload, partition_key)
        for name in RecordColumns.__slots__:
            if getattr(derived, name) != getattr(record.columns, name):
                return f"column {name} does not match the hashed envelope"
        return ""
