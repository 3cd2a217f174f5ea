"""Pure order logic of the execution service: no I/O, no clock, no randomness.

Modules, by concern:

- :mod:`.orders`: the contract's enums, the immutable :class:`Order` snapshot
  and its :class:`Fill`, and :func:`new_order` (the rules the contract states).
- :mod:`.lifecycle`: the order life cycle as a declarative transition table,
  ``TRANSITIONS``: (status, trigger) -> next status. :func:`apply` checks every
  precondition before it builds the next snapshot (``version + 1``), so an
  invalid input raises a typed error (:mod:`.errors`) and leaves the caller's
  order untouched, an event is emitted only for a valid transition, and a
  redelivered fill is refused.
- :mod:`.matching` and :mod:`.time_in_force`: the paper venue's matching on
  top of book and IOC/FOK/GTC/DAY, pure functions returning the inputs to
  apply, so the table stays the only place that decides what may happen.
- Arithmetic (the shared :mod:`domain.numbers`): prices and quantities are
  :class:`decimal.Decimal`; sums of fills are exact (a context that traps
  any rounding); the volume-weighted average price is derived from the exact
  notional and rounded only for the wire (at most 12 fractional digits).

The contract's (protobuf) forms of these values are in
:mod:`services.execution.wire`.
"""

from domain.numbers import WIRE_QUANTUM
from services.execution.domain.errors import (
    DuplicateFill,
    InvalidFill,
    InvalidOrder,
    InvalidTransition,
    OrderError,
    Overfill,
)
from services.execution.domain.lifecycle import (
    TRANSITION_SOURCES,
    TRANSITIONS,
    Accept,
    Cancel,
    EventKind,
    Expire,
    OrderEvent,
    OrderInput,
    Reject,
    ReportFill,
    RequestCancel,
    Trigger,
    apply,
    apply_all,
    is_cancelable,
    next_status,
)
from services.execution.domain.matching import Quote, derive_execution_id, is_marketable, match_quote
from services.execution.domain.orders import (
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    WORKING_STATUSES,
    CancelReason,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    new_order,
)
from services.execution.domain.time_in_force import day_session_end, expiry_due, on_quote

__all__ = [
    "OPEN_STATUSES",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "TRANSITION_SOURCES",
    "WIRE_QUANTUM",
    "WORKING_STATUSES",
    "Accept",
    "Cancel",
    "CancelReason",
    "DuplicateFill",
    "EventKind",
    "Expire",
    "Fill",
    "InvalidFill",
    "InvalidOrder",
    "InvalidTransition",
    "Liquidity",
    "Order",
    "OrderError",
    "OrderEvent",
    "OrderInput",
    "OrderStatus",
    "OrderType",
    "Overfill",
    "Quote",
    "Reject",
    "ReportFill",
    "RequestCancel",
    "Side",
    "TimeInForce",
    "Trigger",
    "apply",
    "apply_all",
    "day_session_end",
    "derive_execution_id",
    "expiry_due",
    "is_cancelable",
    "is_marketable",
    "match_quote",
    "new_order",
    "next_status",
    "on_quote",
]
