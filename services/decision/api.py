"""gRPC API of the decision service (trading.decision.v1.DecisionService).

Strategies live in the strategy store (per tenant; PostgreSQL in
production, services/decision/ports.py names the contract); models are the
ones this process loaded (ListModels); signals are read from the signal
store (GetSignals), where the engine records every signal and keeps them
``signal_retention_hours``; a new strategy's symbols are checked against the
instrument directory (marketdata's universe); FindSimilarStates searches the
market memory (services/decision/memory.py) for the symbol's current state.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
from trading.decision.v1 import decision_service_pb2 as pb
from trading.decision.v1 import events_pb2

from runtime import decimals, paging
from runtime.context import current_context, require_tenant
from runtime.errors import FieldViolation, ServiceError, domain_error, invalid_argument
from runtime.messaging import new_envelope
from runtime.outbox import KAFKA, OutboxRelay, OutboxRow, outbox_row
from services.decision.domain import embedding
from services.decision.engine import PRODUCER
from services.decision.inference import Ensemble
from services.decision.memory import MarketMemory, MemoryBusy
from services.decision.models import LoadedModel
from services.decision.ports import (
    InstrumentDirectory,
    SignalFilter,
    SignalStore,
    StrategyRow,
    StrategyStore,
    VersionMismatchError,
)

log = logging.getLogger(__name__)

DOMAIN = "trading.decision"

Context = grpc.aio.ServicerContext[Any, Any]


def _page_cursor(token: str) -> dict[str, Any]:
    try:
        return paging.decode_token(token)
    except paging.InvalidPageTokenError as exc:
        raise ServiceError(invalid_argument([FieldViolation("page_token", str(exc))])) from None


def strategy_message(row: StrategyRow) -> pb.Strategy:
    spec = pb.StrategySpec(
        name=row.name,
        description=row.description,
        symbols=list(row.symbols),
        enabled=row.enabled,
        max_position=decimals.to_proto(row.max_position),
        sizing=pb.OrderSizing(fixed_quantity=decimals.to_proto(row.fixed_quantity)),
        model_ids=list(row.model_ids),
        signal_threshold=row.signal_threshold,
    )
    if row.cooldown_ms:
        spec.cooldown.FromMilliseconds(row.cooldown_ms)
    out = pb.Strategy(strategy_id=row.strategy_id, spec=spec, version=row.version, updated_by=row.updated_by)
    out.created_at.FromDatetime(row.created_at)
    out.updated_at.FromDatetime(row.updated_at)
    return out


def model_message(model: LoadedModel, drift: Mapping[str, float] | None = None, window: int = 0) -> pb.Model:
    """A loaded model as the contract shows it, with its live input drift."""
    meta = model.meta
    out = pb.Model(
        model_id=meta.model_id,
        kind=pb.ModelKind.Value(f"MODEL_KIND_{meta.kind}"),
        version=meta.version,
        metrics=meta.metrics,
        feature_names=meta.feature_names,
        feature_set_version=meta.feature_set_version,
        training_samples=meta.training_samples,
        artifact_sha256=meta.artifact_sha256,
        description=meta.description,
    )
    out.trained_at.FromDatetime(meta.trained_at_dt)
    for feature, psi in (drift or {}).items():
        out.feature_drift.add(feature=feature, psi=psi, window_vectors=window)
    return out


def _not_found(strategy_id: str) -> ServiceError:
    return ServiceError(
        domain_error(
            grpc.StatusCode.NOT_FOUND,
            "STRATEGY_NOT_FOUND",
            DOMAIN,
            f"no strategy {strategy_id}",
            {"strategy_id": strategy_id},
        )
    )


def _version_mismatch(strategy_id: str, expected: int, stored: int) -> ServiceError:
    return ServiceError(
        domain_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            "STRATEGY_VERSION_MISMATCH",
            DOMAIN,
            f"strategy {strategy_id} is at version {stored}, not {expected}",
            {"strategy_id": strategy_id, "stored_version": str(stored), "expected_version": str(expected)},
        )
    )


def strategy_updated_rows(row: StrategyRow, previous_version: int) -> list[OutboxRow]:
    """StrategyUpdated of a stored change, for the outbox (StrategyStore's `announce`)."""
    payload = events_pb2.StrategyUpdated(
        strategy_id=row.strategy_id,
        strategy=strategy_message(row),
        previous_version=previous_version,
        actor_id=row.updated_by,
    )
    envelope = new_envelope(
        payload, tenant_id=row.tenant_id, correlation_id=current_context().correlation_id, producer=PRODUCER
    )
    return [outbox_row(envelope, KAFKA)]


class DecisionApi:
    """The DecisionService servicer."""

    def __init__(
        self,
        strategies: StrategyStore,
        signals: SignalStore,
        ensemble: Ensemble,
        instruments: InstrumentDirectory,
        on_change: Callable[[str], Awaitable[None]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        relay: OutboxRelay | None = None,
        memory: MarketMemory | None = None,
    ) -> None:
        self._memory = memory
        self._strategies = strategies
        self._signals = signals
        self._ensemble = ensemble
        self._relay = relay
        self._instruments = instruments
        self._on_change = on_change
        self._clock = clock

    # ------------------------------------------------------------ strategies

    async def GetStrategy(self, request: pb.GetStrategyRequest, context: Context) -> pb.GetStrategyResponse:
        row = await self._strategies.get(require_tenant(), request.strategy_id)
        if row is None:
            raise _not_found(request.strategy_id)
        return pb.GetStrategyResponse(strategy=strategy_message(row))

    async def ListStrategies(
        self, request: pb.ListStrategiesRequest, context: Context
    ) -> pb.ListStrategiesResponse:
        tenant = require_tenant()
        cursor = _page_cursor(request.page_token)
        limit = paging.page_size(request.page_size)
        rows = await self._strategies.list_page(
            tenant,
            after=str(cursor.get("after", "")),
            limit=limit + 1,
            symbol=request.symbol,
            enabled_only=request.enabled_only,
        )
        page, more = rows[:limit], len(rows) > limit
        return pb.ListStrategiesResponse(
            strategies=[strategy_message(r) for r in page],
            next_page_token=paging.encode_token({"after": page[-1].strategy_id}) if more else "",
        )

    async def _check_spec(self, spec: pb.StrategySpec) -> None:
        violations = [
            FieldViolation(
                f"spec.model_ids[{i}]", f"no loaded model {m!r} (see ListModels)", "MODEL_NOT_LOADED"
            )
            for i, m in enumerate(spec.model_ids)
            if m not in self._ensemble.models
        ]
        # The instrument universe marketdata publishes; unchecked before marketdata ever ran.
        known = await self._instruments.listed(spec.symbols)
        if known is not None:
            violations += [
                FieldViolation(f"spec.symbols[{i}]", f"unknown instrument {s!r}", "UNKNOWN_SYMBOL")
                for i, (s, ok) in enumerate(zip(spec.symbols, known, strict=True))
                if not ok
            ]
        try:
            decimals.from_proto(spec.max_position)
            decimals.from_proto(spec.sizing.fixed_quantity)
        except ArithmeticError:
            violations.append(FieldViolation("spec", "max_position and sizing must be decimal numbers"))
        if violations:
            raise ServiceError(invalid_argument(violations))

    async def SetStrategy(self, request: pb.SetStrategyRequest, context: Context) -> pb.SetStrategyResponse:
        tenant = require_tenant()
        spec = request.spec
        await self._check_spec(spec)
        now = self._clock()
        new = StrategyRow(
            tenant_id=tenant,
            strategy_id=request.strategy_id,
            name=spec.name,
            description=spec.description,
            symbols=tuple(spec.symbols),
            enabled=spec.enabled,
            max_position=decimals.from_proto(spec.max_position).normalize(),
            fixed_quantity=decimals.from_proto(spec.sizing.fixed_quantity).normalize(),
            model_ids=tuple(spec.model_ids),
            signal_threshold=spec.signal_threshold,
            cooldown_ms=spec.cooldown.ToMilliseconds() if spec.HasField("cooldown") else 0,
            version=0,
            created_at=now,
            updated_at=now,
            updated_by=current_context().subject,
        )
        try:
            stored, previous = await self._strategies.upsert(new, request.expected_version)
        except VersionMismatchError as exc:
            raise _version_mismatch(request.strategy_id, request.expected_version, exc.stored) from None
        if previous is None or stored.version != previous.version:
            await self._changed(tenant, stored, previous.version if previous else 0)
        return pb.SetStrategyResponse(strategy=strategy_message(stored), created=previous is None)

    async def SetStrategyEnabled(
        self, request: pb.SetStrategyEnabledRequest, context: Context
    ) -> pb.SetStrategyEnabledResponse:
        tenant = require_tenant()
        try:
            result = await self._strategies.set_enabled(
                tenant,
                request.strategy_id,
                request.enabled,
                request.expected_version,
                self._clock(),
                current_context().subject,
            )
        except VersionMismatchError as exc:
            raise _version_mismatch(request.strategy_id, request.expected_version, exc.stored) from None
        if result is None:
            raise _not_found(request.strategy_id)
        stored, previous = result
        if stored.version != previous.version:
            await self._changed(tenant, stored, previous.version)
        return pb.SetStrategyEnabledResponse(strategy=strategy_message(stored))

    async def _changed(self, tenant: str, row: StrategyRow, previous_version: int) -> None:
        """The change and its StrategyUpdated committed together (see strategy_updated_rows)."""
        await self._on_change(tenant)
        if self._relay is not None:
            self._relay.wake()

    # ------------------------------------------------------------ models and signals

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        cursor = _page_cursor(request.page_token)
        limit = paging.page_size(request.page_size)
        after = str(cursor.get("after", ""))
        kind = pb.ModelKind.Name(request.kind).removeprefix("MODEL_KIND_") if request.kind else ""
        matching = [
            m
            for model_id, m in sorted(self._ensemble.models.items())
            if model_id > after and (not kind or m.meta.kind == kind)
        ]
        page, more = matching[:limit], len(matching) > limit
        return pb.ListModelsResponse(
            models=[model_message(m, *self._ensemble.drift(m.model_id)) for m in page],
            next_page_token=paging.encode_token({"after": page[-1].model_id}) if more else "",
        )

    async def GetSignals(self, request: pb.GetSignalsRequest, context: Context) -> pb.GetSignalsResponse:
        tenant = require_tenant()
        cursor = _page_cursor(request.page_token)
        before: tuple[datetime, str] | None = None
        if cursor:
            try:
                before = (datetime.fromisoformat(str(cursor["at"])), str(cursor["id"]))
            except (KeyError, ValueError):
                raise ServiceError(
                    invalid_argument(
                        [FieldViolation("page_token", "page_token is not a token this server issued")]
                    )
                ) from None
        limit = paging.page_size(request.page_size)
        tr = request.time_range
        where = SignalFilter(
            symbol=request.symbol,
            strategy_id=request.strategy_id,
            start=tr.start.ToDatetime(tzinfo=UTC) if tr.HasField("start") else None,
            end=tr.end.ToDatetime(tzinfo=UTC) if tr.HasField("end") else None,
            direction=int(request.direction),
        )
        rows = await self._signals.page(tenant, where=where, before=before, limit=limit + 1)
        page, more = rows[:limit], len(rows) > limit
        token = paging.encode_token({"at": page[-1][0].isoformat(), "id": page[-1][1]}) if more else ""
        signals = []
        for _, _, payload, status in page:
            signal = pb.Signal.FromString(payload)
            if status is not None:  # the stored payload is the signal as generated; the status is now's
                signal.intent_status = pb.IntentStatus.ValueType(status)
            signals.append(signal)
        return pb.GetSignalsResponse(signals=signals, next_page_token=token)

    # ------------------------------------------------------------ market memory

    async def FindSimilarStates(
        self, request: pb.FindSimilarStatesRequest, context: Context
    ) -> pb.FindSimilarStatesResponse:
        # Market data, the same for every tenant; the caller's scopes were checked by the guard.
        symbol = request.symbol
        state = self._memory.current(symbol) if self._memory is not None else None
        if state is None:
            why = (
                "decision runs without a market memory"
                if self._memory is None
                else f"no recent warmed-up feature vector of {symbol}: the memory follows the symbols"
                " some enabled strategy trades"
            )
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "MARKET_STATE_UNKNOWN",
                    DOMAIN,
                    why,
                    {"symbol": symbol},
                )
            )
        assert self._memory is not None
        tr = request.time_range
        try:
            found = await self._memory.similar(
                state,
                request.limit or DEFAULT_SIMILAR,
                symbol=symbol if request.same_symbol else None,
                start=tr.start.ToDatetime(tzinfo=UTC) if tr.HasField("start") else None,
                end=tr.end.ToDatetime(tzinfo=UTC) if tr.HasField("end") else None,
            )
        except MemoryBusy as exc:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "MARKET_MEMORY_BUSY",
                    DOMAIN,
                    str(exc),
                    {"symbol": symbol},
                    retry_after_s=0.1,
                )
            ) from None
        response = pb.FindSimilarStatesResponse(current=_state_message(state.id, state.symbol, state.at))
        response.current.tick_sequence = state.tick_sequence
        for n in found:
            similar = response.states.add(
                similarity=n.similarity,
                outcome=pb.MarketStateOutcome.ValueType(int(n.payload.get("outcome") or 0)),
                move_bps=float(n.payload.get("move_bps") or 0.0),
                horizon_ticks=int(n.payload.get("horizon_ticks") or 0),
            )
            similar.state.CopyFrom(_state_message(n.id, n.symbol, n.at))
            similar.state.tick_sequence = int(n.payload.get("tick_sequence") or 0)
            similar.state.embedding_version = str(n.payload.get("embedding") or "")
        return response


# Similar states returned when the request does not say how many.
DEFAULT_SIMILAR = 10


def _state_message(state_id: str, symbol: str, at: datetime) -> pb.MarketState:
    out = pb.MarketState(state_id=state_id, symbol=symbol, embedding_version=embedding.EMBEDDING_VERSION)
    out.as_of.FromDatetime(at)
    return out
