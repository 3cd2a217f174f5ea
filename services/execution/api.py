"""gRPC API of the execution service (trading.execution.v1.ExecutionService).

PlaceOrder, step by step:

1. The pre-trade check (the :class:`~services.execution.ports.PreTradeRisk`
   port; in production risk's own check run in this process on risk's state,
   with risk's CheckOrder over gRPC deciding every check that is not a plain
   approval: services.execution.adapters.risk. Keyed by client order id on
   risk's side, so a retried check never counts twice). Risk unavailable:
   the call fails with UNAVAILABLE (reason RISK_UNAVAILABLE, RetryInfo) and
   nothing is stored, unless the order already exists (a retry), which is
   answered from the database.
2. Approved: the venue acknowledges it and reports what happened at once
   (paper: fills at the touch of the quote risk approved, IOC/FOK cancels). Denied: REJECTED with the
   first denial's code as reject_reason.
3. One transaction inserts the order in its resulting state, its executions
   and the outbox rows of every event; ``INSERT ... ON CONFLICT DO NOTHING``
   on (tenant, client_order_id) decides between concurrent duplicates, and
   the loser answers with the winner's order (``replayed = true``).

Idempotency follows the released contract: a retry with the same
client_order_id returns the first result (the order in its current state,
or the same risk refusal) and places nothing, *even if the other fields
differ*. A retry with a different body is logged and counted
(``execution_idempotency_mismatch_total``) but not refused.

Risk refusals are FAILED_PRECONDITION with ErrorInfo (domain "trading.risk",
reason the denial code, metadata order_id and client_order_id); the order is
stored as REJECTED and its events are published. Orders of other tenants are
NOT_FOUND, never PERMISSION_DENIED, so their existence does not leak.

The servicer depends on ports only (services/execution/ports.py): the order
store, the venue and the pre-trade risk check; main.py wires the real ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
from nats.aio.client import Client as NatsClient
from prometheus_client import Counter, Histogram
from trading.execution.v1 import events_pb2
from trading.execution.v1 import execution_service_pb2 as pb

from runtime import decimals, paging
from runtime.context import require_tenant
from runtime.contracts import event_registry
from runtime.errors import (
    FieldViolation,
    ServiceError,
    domain_error,
    invalid_argument,
    status,
)
from runtime.interceptors import LATENCY_BUCKETS
from runtime.messaging import Event, uuid7
from runtime.messaging.nats.live import FellBehindError, Overflow, ordered_subscription
from services.execution.domain import (
    CancelReason,
    InvalidOrder,
    Order,
    OrderEvent,
    OrderInput,
    OrderStatus,
    OrderType,
    Reject,
    RequestCancel,
    Side,
    TimeInForce,
    apply,
    apply_all,
    is_cancelable,
    new_order,
)
from services.execution.outbox import outbox_rows
from services.execution.ports import (
    Cursor,
    OrderFilter,
    OrderStore,
    PreTradeRisk,
    RiskCheckFailed,
    RiskDecision,
    RiskRequestRefused,
    StoredOrder,
    Venue,
)
from services.execution.wire import order_to_proto

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

log = logging.getLogger(__name__)

DOMAIN = "trading.execution"
RISK_DOMAIN = "trading.risk"
ORDER_UPDATES_SUBJECT = "execution.orders.{tenant}.{symbol}"
# The durable stream holding them (runtime.messaging.nats.streams.platform_streams
# names it after the domain; nats_permissions grants execution ordered reads of it).
ORDER_UPDATES_STREAM = "EXECUTION"

# A tenant id must be one NATS subject token (order updates are published per tenant).
_SUBJECT_TOKEN = re.compile(r"[^.*>\s]+")
_STREAM_BUFFER = 1000
ORDER_STATUS_EVENT = events_pb2.OrderStatusChanged.DESCRIPTOR.full_name

IDEMPOTENCY_MISMATCH = Counter(
    "execution_idempotency_mismatch_total",
    "PlaceOrder retries whose body differs from the first request with the same client_order_id.",
)
REPLAYED = Counter("execution_place_order_replayed_total", "PlaceOrder calls answered from an earlier order.")
_STAGE_SECONDS = Histogram(
    "execution_place_order_stage_seconds",
    "Time of each stage of a PlaceOrder that got as far as storing: request (validation and the "
    "instrument), risk (the pre-trade check), venue (the paper fill), store (the PostgreSQL write). "
    "Their sum against grpc_server_handling_seconds is the interceptors' share.",
    ("stage",),
    buckets=LATENCY_BUCKETS,
)
_STAGES = tuple(_STAGE_SECONDS.labels(stage) for stage in ("request", "risk", "venue", "store"))

Context = grpc.aio.ServicerContext[Any, Any]


# ---------------------------------------------------------------------------- errors


def _not_found(ref: str) -> ServiceError:
    return ServiceError(
        domain_error(grpc.StatusCode.NOT_FOUND, "EXECUTION_ORDER_NOT_FOUND", DOMAIN, f"no order {ref}")
    )


def _risk_refusal(order: Order) -> ServiceError:
    return ServiceError(
        domain_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            order.reject_reason,
            RISK_DOMAIN,
            order.status_message or f"order refused by risk: {order.reject_reason}",
            {"order_id": order.order_id, "client_order_id": order.client_order_id},
        )
    )


def _risk_unavailable(reason: str) -> ServiceError:
    return ServiceError(
        domain_error(
            grpc.StatusCode.UNAVAILABLE,
            "RISK_UNAVAILABLE",
            DOMAIN,
            f"the pre-trade risk check is unavailable ({reason}); nothing was placed",
            retry_after_s=0.5,
        )
    )


class _NotCancelable(Exception):
    def __init__(self, order: Order) -> None:
        super().__init__(order.status.name)
        self.order = order


def _tenant() -> str:
    tenant = require_tenant()
    if not _SUBJECT_TOKEN.fullmatch(tenant):
        raise ServiceError(
            domain_error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "EXECUTION_TENANT_ID_INVALID",
                DOMAIN,
                "the tenant id must not contain '.', '*', '>' or whitespace",
            )
        )
    return tenant


def _ref(request: pb.GetOrderRequest | pb.CancelOrderRequest) -> tuple[str | None, str | None, str]:
    """(order_id, client_order_id, text for messages) of a oneof order_ref."""
    if request.WhichOneof("order_ref") == "order_id":
        return request.order_id, None, request.order_id
    return None, request.client_order_id, f"with client_order_id {request.client_order_id}"


def _filter_fingerprint(where: OrderFilter) -> str:
    """A short fingerprint of the filters, kept in page tokens so a token is
    only accepted with the filters it was issued for."""
    raw = json.dumps(
        [
            list(where.statuses),
            where.symbol,
            where.strategy_id,
            where.created_from.isoformat() if where.created_from else None,
            where.created_to.isoformat() if where.created_to else None,
        ],
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:9]).decode()


# ---------------------------------------------------------------------------- servicer


def _observe_stages(*marks: float) -> None:
    for stage, start, end in zip(_STAGES, marks, marks[1:], strict=False):
        stage.observe(end - start)


class ExecutionApi:
    """The ExecutionService servicer."""

    def __init__(
        self,
        store: OrderStore,
        venue: Venue,
        risk: PreTradeRisk,
        nats: NatsClient,
        on_change: Callable[[Sequence[OrderEvent]], None],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._venue = venue
        self._risk = risk
        self._nats = nats
        self._on_change = on_change
        self._clock = clock

    # ---- PlaceOrder

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: Context) -> pb.PlaceOrderResponse:
        began = time.perf_counter()
        tenant = _tenant()
        now = self._clock()
        try:
            order = new_order(
                order_id=str(uuid7()),
                tenant_id=tenant,
                client_order_id=request.client_order_id,
                symbol=request.symbol,
                side=Side(request.side),
                type=OrderType(request.type),
                time_in_force=TimeInForce(request.time_in_force),
                quantity=decimals.from_proto(request.quantity),
                limit_price=(
                    decimals.from_proto(request.limit_price) if request.HasField("limit_price") else None
                ),
                created_at=now,
                strategy_id=request.strategy_id,
                venue=self._venue.name,
            )
        except (InvalidOrder, ArithmeticError, ValueError) as exc:
            raise ServiceError(invalid_argument([FieldViolation("", str(exc))])) from None
        request_hash = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        if not await self._venue.lists(order.symbol):
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.NOT_FOUND,
                    "INSTRUMENT_NOT_FOUND",
                    DOMAIN,
                    f"no instrument {order.symbol}",
                    {"symbol": order.symbol},
                )
            )

        validated = time.perf_counter()
        try:
            check = await self._risk.check(order)
        except RiskCheckFailed as err:
            existing = await self._store.get(tenant, client_order_id=order.client_order_id)
            if existing is not None:
                return self._replay(existing, request_hash)
            if isinstance(err, RiskRequestRefused):
                # Risk refused the request itself (e.g. INVALID_ARGUMENT): pass its status on.
                raise ServiceError(err.status) from None
            log.warning("risk check failed for %s: %s", order.client_order_id, err)
            raise _risk_unavailable(str(err)) from None

        checked = time.perf_counter()
        if check.approved:
            inputs = await self._venue.submit(order, now, check.quote)
            final, events = apply_all(order, inputs)
        else:
            final, events = apply(order, self._rejection(check, now))
        filled = time.perf_counter()
        stored = await self._store.create(
            final,
            events,
            outbox_rows(events),
            request_hash=request_hash,
            expires_at=self._venue.session_end(order),
            risk_check_id=check.check_id,
        )
        _observe_stages(began, validated, checked, filled, time.perf_counter())
        if stored is None:  # a concurrent or earlier request with this client_order_id won
            existing = await self._store.get(tenant, client_order_id=order.client_order_id)
            if existing is None:  # pragma: no cover - the winner's row is committed before the conflict
                raise ServiceError(status(grpc.StatusCode.ABORTED, "concurrent placement; retry"))
            return self._replay(existing, request_hash)
        self._on_change(events)
        if final.status is OrderStatus.REJECTED:
            raise _risk_refusal(final)
        return pb.PlaceOrderResponse(order=order_to_proto(final), replayed=False)

    @staticmethod
    def _rejection(check: RiskDecision, at: datetime) -> Reject:
        denials = check.denials
        reason = denials[0].code if denials else "RISK_DENIED"
        message = "; ".join(d.message or d.code for d in denials) or "denied by risk"
        return Reject(at=at, reason=reason, message=message)

    def _replay(self, existing: StoredOrder, request_hash: bytes) -> pb.PlaceOrderResponse:
        REPLAYED.inc()
        order = existing.order
        if existing.request_hash != request_hash:
            IDEMPOTENCY_MISMATCH.inc()
            log.warning(
                "PlaceOrder retry with client_order_id %s differs from the first request; "
                "answering with the first result",
                order.client_order_id,
            )
        if order.status is OrderStatus.REJECTED and order.reject_reason.startswith("RISK_"):
            raise _risk_refusal(order)
        return pb.PlaceOrderResponse(order=order_to_proto(order), replayed=True)

    # ---- CancelOrder, GetOrder, ListOrders

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Context) -> pb.CancelOrderResponse:
        """Two steps: PENDING_CANCEL is stored (with its event) before the venue
        is asked, then the venue's answer is applied. A retry of a cancel left
        in PENDING_CANCEL asks the venue again, so an interrupted cancel heals."""
        tenant = _tenant()
        order_id, client_order_id, ref = _ref(request)
        now = self._clock()

        def request_cancel(order: Order, _expires: datetime | None) -> Sequence[OrderInput]:
            if order.status in (OrderStatus.CANCELED, OrderStatus.PENDING_CANCEL):
                return ()  # done or under way: idempotent
            if not is_cancelable(order):
                raise _NotCancelable(order)
            return (RequestCancel(at=now, reason=CancelReason.CLIENT_REQUEST, message="client request"),)

        try:
            result = await self._store.update(
                tenant, request_cancel, outbox_rows, order_id=order_id, client_order_id=client_order_id
            )
        except _NotCancelable as exc:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "EXECUTION_ORDER_NOT_CANCELABLE",
                    DOMAIN,
                    f"order {exc.order.order_id} is {exc.order.status.name} and cannot be canceled",
                    {"order_id": exc.order.order_id, "status": exc.order.status.name},
                )
            ) from None
        if result is None:
            raise _not_found(ref)
        order, events = result
        if events:
            self._on_change(events)
        if order.status is not OrderStatus.PENDING_CANCEL:
            return pb.CancelOrderResponse(order=order_to_proto(order))

        answer = await self._venue.cancel(order, now)

        def confirm(current: Order, _expires: datetime | None) -> Sequence[OrderInput]:
            # A fill may have completed the order between the two steps.
            return answer if current.status is OrderStatus.PENDING_CANCEL else ()

        confirmed = await self._store.update(tenant, confirm, outbox_rows, order_id=order.order_id)
        if confirmed is None:  # pragma: no cover - orders are never deleted
            raise _not_found(ref)
        if confirmed[1]:
            self._on_change(confirmed[1])
        return pb.CancelOrderResponse(order=order_to_proto(confirmed[0]))

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        tenant = _tenant()
        order_id, client_order_id, ref = _ref(request)
        stored = await self._store.get(tenant, order_id=order_id, client_order_id=client_order_id)
        if stored is None:
            raise _not_found(ref)
        return pb.GetOrderResponse(order=order_to_proto(stored.order))

    async def ListOrders(self, request: pb.ListOrdersRequest, context: Context) -> pb.ListOrdersResponse:
        tenant = _tenant()
        created = request.created
        where = OrderFilter(
            statuses=tuple(int(s) for s in request.statuses),
            symbol=request.symbol or None,
            strategy_id=request.strategy_id or None,
            created_from=created.start.ToDatetime(tzinfo=UTC) if created.HasField("start") else None,
            created_to=created.end.ToDatetime(tzinfo=UTC) if created.HasField("end") else None,
        )
        fingerprint = _filter_fingerprint(where)
        try:
            raw = paging.decode_token(request.page_token)
            if raw and raw.get("f") != fingerprint:
                raise paging.InvalidPageTokenError("page_token was issued for other filters")
            after = Cursor.decode(raw) if raw else None
        except (paging.InvalidPageTokenError, ValueError) as exc:
            raise ServiceError(invalid_argument([FieldViolation("page_token", str(exc))])) from None
        limit = paging.page_size(request.page_size)
        orders = await self._store.page(tenant, where=where, after=after, limit=limit + 1)
        page, more = orders[:limit], len(orders) > limit
        token = ""
        if more:
            last = page[-1]
            token = paging.encode_token({**Cursor(last.created_at, last.order_id).encode(), "f": fingerprint})
        return pb.ListOrdersResponse(orders=[order_to_proto(o) for o in page], next_page_token=token)

    # ---- StreamOrderUpdates

    async def StreamOrderUpdates(
        self, request: pb.StreamOrderUpdatesRequest, context: Context
    ) -> AsyncIterator[pb.StreamOrderUpdatesResponse]:
        """The tenant's order updates, read from the durable EXECUTION stream
        with an ephemeral ordered consumer: every live update carries its
        stream sequence, so a client that lost the stream resumes after the
        last one it saw (resume_after_sequence) and misses or repeats nothing.
        The filter subject is built from the verified tenant, so a position
        of another tenant's stream only ever replays this tenant's updates."""
        tenant = _tenant()
        subject = ORDER_UPDATES_SUBJECT.format(tenant=tenant, symbol=request.symbol or "*")
        resume_after = request.resume_after_sequence
        js = self._nats.jetstream()
        if resume_after:
            await self._check_resume_position(js, resume_after)
        # The consumer exists before the snapshot is read, so no change falls
        # in between (from now on; resuming: from the position on).
        try:
            async with ordered_subscription(
                self._nats,
                event_registry(),
                subject,
                stream=ORDER_UPDATES_STREAM,
                name="execution-order-updates",
                start_after=resume_after,
                event_types=[ORDER_STATUS_EVENT],
                buffer=_STREAM_BUFFER,
                overflow=Overflow.END,
            ) as updates:
                seen: dict[str, int] = {}
                if request.include_open_orders and not resume_after:
                    for order in await self._store.open_orders(tenant, request.symbol or None):
                        seen[order.order_id] = order.version
                        yield pb.StreamOrderUpdatesResponse(order=order_to_proto(order), snapshot=True)
                async for event in updates:
                    update = _update_of(event)
                    if update.order.version <= seen.get(update.order.order_id, 0):
                        continue  # older than the snapshot already sent
                    update.stream_sequence = event.delivery.position
                    yield update
        except FellBehindError:
            raise ServiceError(
                status(
                    grpc.StatusCode.ABORTED,
                    "the stream fell behind; reconnect with resume_after_sequence"
                    " (SSE: Last-Event-ID) to continue after the last update received",
                )
            ) from None

    async def _check_resume_position(self, js: JetStreamContext, resume_after: int) -> None:
        """OUT_OF_RANGE unless the updates after `resume_after` are all still
        kept: resuming anyway would silently skip the lost ones."""
        info = await js.stream_info(ORDER_UPDATES_STREAM)
        first, last = info.state.first_seq, info.state.last_seq
        if resume_after > last:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.OUT_OF_RANGE,
                    "STREAM_POSITION_UNKNOWN",
                    DOMAIN,
                    f"position {resume_after} was never issued by this stream",
                    {"resume_after_sequence": str(resume_after)},
                )
            )
        if resume_after + 1 < first:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.OUT_OF_RANGE,
                    "STREAM_POSITION_EXPIRED",
                    DOMAIN,
                    f"the updates after position {resume_after} are no longer kept; "
                    "reconnect without it, with include_open_orders, for the current state",
                    {"resume_after_sequence": str(resume_after)},
                )
            )


def _update_of(event: Event) -> pb.StreamOrderUpdatesResponse:
    changed = event.payload
    assert isinstance(changed, events_pb2.OrderStatusChanged)  # the subscription's only event type
    update = pb.StreamOrderUpdatesResponse(order=changed.order, previous_status=changed.previous_status)
    if changed.HasField("fill"):
        update.fill.CopyFrom(changed.fill)
    return update
