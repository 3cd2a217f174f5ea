"""gRPC API of the audit service (trading.audit.v1.AuditService).

Every RPC works on the caller's tenant (from the verified metadata) and its
chain only; the store port keeps chains apart (row-level security in
PostgreSQL backs that up). Request shapes
(page size, patterns, ranges, enum values) are checked by protovalidate in
the server interceptor before a method runs; what only code can check (page
tokens) answers INVALID_ARGUMENT with a field violation here.

- QueryEvents: the records matching every given filter, ascending by
  sequence, keyset-paged (the token holds the last sequence and a digest of
  the filters it was issued for).
- VerifyChain: walks the chain (domain.ChainVerifier) and reports the first
  break; a break is also published as AuditChainBroken on Kafka.
- ReplayTenant: rebuilds orders and positions from the stored events up to
  the chain head at the start of the call and compares them with execution
  and portfolio, read over gRPC afterwards.
- GetLineage: a page of the tenant's lineage graph (domain/lineage.py) from one
  entity (runtime.graph.GraphStore.subgraph), keyset-paged by the start's direct
  neighbours (the token holds the last one and a digest of the request).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from trading.audit.v1 import audit_service_pb2 as pb
from trading.audit.v1 import events_pb2 as audit_events
from trading.audit.v1 import types_pb2 as types
from trading.common.v1 import event_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.portfolio.v1 import events_pb2 as portfolio_events

from runtime import paging
from runtime.context import current_context, require_tenant, use_context
from runtime.errors import FieldViolation, ServiceError, domain_error, invalid_argument
from runtime.graph import Cursor, Direction, Edge, GraphStore, Node, NodeKey
from runtime.messaging import decode_envelope, new_envelope, unpack
from runtime.messaging.base import Registry
from services.audit import domain
from services.audit.domain import lineage
from services.audit.ports import AlertPublisher, AuditStore, EventFilter, LiveState, Row
from services.audit.settings import AuditSettings

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

DOMAIN = "trading.audit"
PRODUCER = "audit"
# What the replay may read of the live services, whoever called it.
LIVE_READ_SCOPES = frozenset({"orders:read", "portfolio:read"})
DEFAULT_MAX_DIFFERENCES = 100


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def record_message(row: Row, *, include_raw: bool) -> types.AuditRecord:
    record, columns = row.record, row.record.columns
    message = types.AuditRecord(
        sequence=record.sequence,
        event_id=columns.event_id,
        event_type=columns.event_type,
        correlation_id=columns.correlation_id,
        causation_id=columns.causation_id,
        aggregate_type=columns.aggregate_type,
        aggregate_id=columns.aggregate_id,
        occurred_at=_timestamp(columns.occurred_at),
        recorded_at=_timestamp(row.recorded_at),
        producer=columns.producer,
        envelope=event_pb2.EventEnvelope.FromString(record.envelope_bytes),
        prev_hash=record.prev_hash,
        hash=record.hash,
    )
    if include_raw:
        message.envelope_bytes = record.envelope_bytes
    return message


def _filter_of(request: pb.QueryEventsRequest) -> EventFilter:
    start = end = None
    if request.HasField("time_range"):
        if request.time_range.HasField("start"):
            start = request.time_range.start.ToDatetime(tzinfo=UTC)
        if request.time_range.HasField("end"):
            end = request.time_range.end.ToDatetime(tzinfo=UTC)
    return EventFilter(
        correlation_id=request.correlation_id,
        aggregate_type=request.aggregate_type,
        aggregate_id=request.aggregate_id,
        event_type=request.event_type,
        occurred_from=start,
        occurred_to=end,
        from_sequence=request.from_sequence,
    )


def _after_sequence(token: str, fingerprint: str) -> int:
    """The last sequence of the previous page, from a page token."""
    try:
        cursor = paging.decode_token(token)
        if not cursor:
            return 0
        after = cursor.get("s")
        if cursor.get("f") != fingerprint:
            raise paging.InvalidPageTokenError("page_token was issued for other filters")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise paging.InvalidPageTokenError("page_token is not a token this server issued")
        return after
    except paging.InvalidPageTokenError as exc:
        raise ServiceError(invalid_argument([FieldViolation("page_token", str(exc))])) from None


def _break_message(found: domain.ChainBreak) -> types.ChainBreak:
    return types.ChainBreak(
        sequence=found.sequence,
        event_id=found.event_id,
        reason=types.ChainBreakReason.ValueType(found.reason.value),
        expected_hash=found.expected_hash,
        actual_hash=found.actual_hash,
        message=found.message,
    )


def _difference_message(d: domain.Difference) -> types.ReplayDifference:
    return types.ReplayDifference(
        aggregate_type=d.aggregate_type,
        aggregate_id=d.aggregate_id,
        kind=types.DifferenceKind.ValueType(d.kind.value),
        field=d.field,
        replayed_value=d.replayed_value,
        live_value=d.live_value,
    )


# GetLineage's defaults: deep enough for every chain from a fill to its tenant.
DEFAULT_LINEAGE_DEPTH = 8
_NATURAL_DIRECTION = {
    lineage.FILL: Direction.UPSTREAM,
    lineage.ORDER: Direction.UPSTREAM,
}
_DIRECTIONS = {
    pb.LINEAGE_DIRECTION_UPSTREAM: Direction.UPSTREAM,
    pb.LINEAGE_DIRECTION_DOWNSTREAM: Direction.DOWNSTREAM,
}


_START_KINDS = {
    "execution_id": lineage.FILL,
    "order_id": lineage.ORDER,
    "signal_id": lineage.SIGNAL,
    "strategy_id": lineage.STRATEGY,
}


def lineage_start(request: pb.GetLineageRequest) -> NodeKey:
    """The node a GetLineage request starts at (validation requires the oneof)."""
    field = request.WhichOneof("start")
    if field == "model_id":
        return NodeKey(
            lineage.MODEL_VERSION, lineage.model_version_id(request.model_id, request.model_version)
        )
    assert field is not None
    return NodeKey(_START_KINDS[field], getattr(request, field))


def _node_kind(kind: str) -> pb.LineageNodeKind.ValueType:
    return pb.LineageNodeKind.Value(f"LINEAGE_NODE_KIND_{kind.upper()}")


def _lineage_node(node: Node) -> pb.LineageNode:
    return pb.LineageNode(
        kind=_node_kind(node.key.kind),
        id=node.key.id,
        at=_timestamp(node.at),
        attributes=dict(node.attrs),
    )


def _lineage_ref(key: NodeKey) -> pb.LineageNodeRef:
    return pb.LineageNodeRef(kind=_node_kind(key.kind), id=key.id)


def _lineage_edge(edge: Edge) -> pb.LineageEdge:
    # "from" is a Python keyword: set through the constructor's kwargs.
    fields: dict[str, Any] = {"from": _lineage_ref(edge.src)}
    return pb.LineageEdge(
        kind=pb.LineageEdgeKind.Value(f"LINEAGE_EDGE_KIND_{edge.kind.upper()}"),
        to=_lineage_ref(edge.dst),
        at=_timestamp(edge.at),
        **fields,
    )


def _lineage_fingerprint(
    start: NodeKey, direction: Direction, lo: datetime | None, hi: datetime | None, depth: int
) -> str:
    raw = repr((start.kind, start.id, direction.value, lo and lo.isoformat(), hi and hi.isoformat(), depth))
    return f"{zlib.crc32(raw.encode()):08x}"


def _lineage_cursor(token: str, fingerprint: str) -> Cursor | None:
    """The last neighbour of the previous page, from a page token."""
    try:
        cursor = paging.decode_token(token)
        if not cursor:
            return None
        if cursor.get("f") != fingerprint:
            raise paging.InvalidPageTokenError("page_token was issued for another request")
        at, kind, id_ = cursor.get("a"), cursor.get("k"), cursor.get("i")
        if not (isinstance(at, str) and isinstance(kind, str) and isinstance(id_, str)):
            raise paging.InvalidPageTokenError("page_token is not a token this server issued")
        return Cursor(datetime.fromisoformat(at), kind, id_)
    except (paging.InvalidPageTokenError, ValueError) as exc:
        raise ServiceError(invalid_argument([FieldViolation("page_token", str(exc))])) from None


class AuditApi:
    """The AuditService servicer."""

    def __init__(
        self,
        store: AuditStore,
        live: LiveState,
        registry: Registry,
        alerts: AlertPublisher | None,
        settings: AuditSettings,
        graph: GraphStore | None = None,
    ) -> None:
        self._store = store
        self._live = live
        self._registry = registry
        self._alerts = alerts
        self._settings = settings
        self._graph = graph

    # ---- GetLineage

    async def GetLineage(self, request: pb.GetLineageRequest, context: Context) -> pb.GetLineageResponse:
        tenant = require_tenant()
        if self._graph is None:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.UNAVAILABLE, "AUDIT_LINEAGE_UNAVAILABLE", DOMAIN,
                    "the lineage graph is not available", retry_after_s=1.0,
                )
            )  # fmt: skip
        start = lineage_start(request)
        direction = _DIRECTIONS.get(request.direction) or _NATURAL_DIRECTION.get(
            start.kind, Direction.DOWNSTREAM
        )
        lo = hi = None
        if request.HasField("time_range"):
            if request.time_range.HasField("start"):
                lo = request.time_range.start.ToDatetime(tzinfo=UTC)
            if request.time_range.HasField("end"):
                hi = request.time_range.end.ToDatetime(tzinfo=UTC)
        depth = request.max_depth or DEFAULT_LINEAGE_DEPTH
        fingerprint = _lineage_fingerprint(start, direction, lo, hi, depth)
        after = _lineage_cursor(request.page_token, fingerprint)
        page = await self._graph.subgraph(
            tenant,
            start,
            direction=direction,
            max_depth=depth,
            start=lo,
            end=hi,
            after=after,
            limit=paging.page_size(request.page_size),
            max_nodes=self._settings.lineage_max_nodes,
        )
        if page.root is None:
            # As for any read of an entity: unknown here (another tenant's, or
            # its events not consumed yet) is NOT_FOUND.
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.NOT_FOUND, "AUDIT_LINEAGE_NOT_FOUND", DOMAIN,
                    f"no {start.kind.replace('_', ' ')} {start.id!r} in the lineage graph",
                )
            )  # fmt: skip
        response = pb.GetLineageResponse(
            start=_lineage_node(page.root),
            direction=pb.LINEAGE_DIRECTION_UPSTREAM
            if direction is Direction.UPSTREAM
            else pb.LINEAGE_DIRECTION_DOWNSTREAM,
        )
        response.nodes.extend(_lineage_node(n) for n in page.nodes)
        response.edges.extend(_lineage_edge(e) for e in page.edges)
        response.truncated = page.truncated
        if page.next is not None:
            response.next_page_token = paging.encode_token(
                {"a": page.next.at.isoformat(), "k": page.next.kind, "i": page.next.id, "f": fingerprint}
            )
        return response

    # ---- QueryEvents

    async def QueryEvents(self, request: pb.QueryEventsRequest, context: Context) -> pb.QueryEventsResponse:
        tenant = require_tenant()
        where = _filter_of(request)
        fingerprint = where.fingerprint()
        after = _after_sequence(request.page_token, fingerprint)
        limit = paging.page_size(request.page_size)
        rows = await self._store.page(tenant, where, after=after, limit=limit + 1)
        page, more = rows[:limit], len(rows) > limit
        token = paging.encode_token({"s": page[-1].record.sequence, "f": fingerprint}) if more else ""
        return pb.QueryEventsResponse(
            records=[record_message(r, include_raw=request.include_raw) for r in page], next_page_token=token
        )

    # ---- VerifyChain

    async def VerifyChain(self, request: pb.VerifyChainRequest, context: Context) -> pb.VerifyChainResponse:
        tenant = require_tenant()
        verifier = domain.ChainVerifier(self._registry, request.from_sequence)
        async for batch in self._store.records(
            tenant,
            from_sequence=request.from_sequence,
            to_sequence=request.to_sequence,
            batch=self._settings.read_batch,
        ):
            if any(verifier.check(record) is not None for record in batch):
                break
        reply = pb.VerifyChainResponse(
            ok=verifier.broken is None,
            records_checked=verifier.checked,
            first_sequence=verifier.first_sequence,
            last_sequence=verifier.last_sequence,
            last_hash=verifier.last_hash,
            verified_at=_now(),
        )
        if verifier.broken is not None:
            reply.first_break.CopyFrom(_break_message(verifier.broken))
            log.error("audit chain of tenant %s is broken: %s", tenant, verifier.broken.message)
            await self._publish_break(tenant, reply.first_break, reply.verified_at)
        return reply

    async def _publish_break(self, tenant: str, found: types.ChainBreak, at: Timestamp) -> None:
        """AuditChainBroken on Kafka; best effort (the caller has the answer already)."""
        if self._alerts is None:
            return
        payload = audit_events.AuditChainBroken(
            chain_break=found, detected_by=audit_events.DETECTION_SOURCE_VERIFY_CHAIN, detected_at=at
        )
        envelope = new_envelope(
            payload, tenant_id=tenant, correlation_id=current_context().correlation_id, producer=PRODUCER
        )
        try:
            await self._alerts.publish(envelope, payload=payload)
        except Exception:
            log.exception("AuditChainBroken of tenant %s not published", tenant)

    # ---- ReplayTenant

    async def ReplayTenant(
        self, request: pb.ReplayTenantRequest, context: Context
    ) -> pb.ReplayTenantResponse:
        tenant = require_tenant()
        wanted = set(request.aggregates) or {types.REPLAY_AGGREGATE_ORDERS, types.REPLAY_AGGREGATE_POSITIONS}
        with_orders = types.REPLAY_AGGREGATE_ORDERS in wanted
        with_positions = types.REPLAY_AGGREGATE_POSITIONS in wanted
        up_to = await self._store.head(tenant)
        orders = domain.OrderReplay(tenant)
        positions = domain.PositionReplay()
        replayed = 0
        async for batch in self._store.events_of_types(
            tenant, domain.REPLAY_EVENT_TYPES, up_to=up_to, batch=self._settings.read_batch
        ):
            for sequence, data in batch:
                payload = unpack(decode_envelope(data), self._registry)
                replayed += 1
                if isinstance(payload, portfolio_events.PositionChanged):
                    positions.add_booking(payload)
                    continue
                if with_orders and isinstance(payload, domain.ORDER_PAYLOADS):
                    orders.add(payload)
                if with_positions and isinstance(payload, execution_events.OrderFillReported):
                    positions.add_fill(sequence, payload)
        live_orders, live_positions = await self._read_live(with_orders, with_positions)
        differences: list[domain.Difference] = []
        rebuilt_orders = orders.rebuild() if with_orders else {}
        rebuilt_positions = positions.rebuild() if with_positions else {}
        if with_orders:
            differences += domain.compare_orders(rebuilt_orders, live_orders)
        if with_positions:
            differences += domain.compare_positions(rebuilt_positions, live_positions)
        differences.sort()
        limit = request.max_differences or DEFAULT_MAX_DIFFERENCES
        return pb.ReplayTenantResponse(
            consistent=not differences,
            events_replayed=replayed,
            up_to_sequence=up_to,
            orders_compared=len(set(rebuilt_orders) | {o.order_id for o in live_orders}),
            positions_compared=len(set(rebuilt_positions) | {p.symbol for p in live_positions}),
            differences=[_difference_message(d) for d in differences[:limit]],
            truncated=len(differences) > limit,
            completed_at=_now(),
        )

    async def _read_live(self, with_orders: bool, with_positions: bool) -> tuple[list[Any], list[Any]]:
        """Live orders and positions, read as the audit service on the caller's
        tenant and deadline."""
        ctx = replace(current_context(), subject="service:audit", scopes=LIVE_READ_SCOPES)

        async def nothing() -> list[Any]:
            return []

        try:
            with use_context(ctx):
                orders, positions = await asyncio.gather(
                    self._live.orders() if with_orders else nothing(),
                    self._live.positions() if with_positions else nothing(),
                )
        except grpc.aio.AioRpcError as err:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.UNAVAILABLE,
                    "AUDIT_LIVE_STATE_UNAVAILABLE",
                    DOMAIN,
                    f"the live state could not be read: {err.code().name} {err.details() or ''}".strip(),
                    retry_after_s=1.0,
                )
            ) from None
        return list(orders), list(positions)
