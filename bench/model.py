"""What a run produces: one :class:`Result` per measured variant of a path
(or per floor), an explicit "not built yet" for paths whose service does
not exist, and the run's facts. Plain data, serialised to results.json."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.harness import OpenLoopResult, Recorder


class Status(enum.StrEnum):
    MEASURED = "measured"
    NOT_BUILT = "not_built"
    ERROR = "error"  # the path exists but produced no numbers: the run fails


@dataclass
class Result:
    """One row of the report."""

    key: str  # unique, e.g. "event_nats_core"
    target: str  # key of bench.targets.TARGETS; "" for floors
    name: str  # what exactly was measured
    status: Status
    method: str = ""
    notes: str = ""
    issue: int | None = None  # the issue that builds a not-yet-built path
    floor: str | None = None  # key of the floor this path is read against
    latency_ms: dict[str, float] = field(default_factory=dict)
    spectrum: list[tuple[float, float]] = field(default_factory=list)
    histogram: str = ""  # HdrHistogram V2 blob (base64), the whole distribution
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    duration_s: float = 0.0

    @property
    def has_numbers(self) -> bool:
        return self.status is Status.MEASURED and bool(self.latency_ms) and self.latency_ms["count"] > 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["spectrum"] = [list(p) for p in self.spectrum]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        fields = dict(data)
        fields["status"] = Status(fields["status"])
        fields["spectrum"] = [tuple(p) for p in fields.get("spectrum", [])]
        return cls(**fields)


def measured(
    key: str,
    target: str,
    name: str,
    rec: Recorder,
    *,
    method: str,
    notes: str = "",
    floor: str | None = None,
    extra: dict[str, Any] | None = None,
    duration_s: float = 0.0,
) -> Result:
    """A result from a recorder; a recorder without samples is an error."""
    if rec.count == 0:
        return Result(key, target, name, Status.ERROR, method=method, error="no samples recorded")
    extra = dict(extra or {})
    if rec.clamped:
        extra["clamped_samples"] = rec.clamped
    return Result(
        key,
        target,
        name,
        Status.MEASURED,
        method=method,
        notes=notes,
        floor=floor,
        latency_ms=rec.summary(),
        spectrum=rec.spectrum(),
        histogram=rec.encode(),
        extra=extra,
        duration_s=duration_s,
    )


def from_open_loop(
    key: str, target: str, name: str, run: OpenLoopResult, *, notes: str = "", floor: str | None = None
) -> Result:
    """A result of an open-loop run; lost messages are reported, never hidden."""
    extra: dict[str, Any] = {
        "rate_per_s": run.rate_per_s,
        "achieved_rate_per_s": round(run.achieved_rate_per_s, 1),
        "sent": run.sent,
        "completed": run.completed,
        "missing": run.missing,
        "sender_lateness_ms": run.sender_lateness.summary(),
    }
    method = f"open loop at {run.rate_per_s:,.0f} msg/s; latency = handler entry - intended send time"
    result = measured(
        key, target, name, run.latency, method=method, notes=notes, floor=floor, extra=extra,
        duration_s=run.duration_s,
    )  # fmt: skip
    if run.missing and result.status is Status.MEASURED:
        result.notes = (result.notes + f" {run.missing} of {run.sent} messages never arrived.").strip()
    return result


def not_built(key: str, target: str, name: str, issue: int | None, why: str) -> Result:
    return Result(key, target, name, Status.NOT_BUILT, issue=issue, notes=why)


def errored(key: str, target: str, name: str, error: BaseException | str) -> Result:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return Result(key, target, name, Status.ERROR, error=text)


@dataclass
class Run:
    """Everything results.json holds."""

    mode: str
    started_at: str
    duration_s: float
    machine: dict[str, Any]
    floors: list[Result]
    paths: list[Result]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 1),
            "machine": self.machine,
            "settings": self.settings,
            "floors": [r.to_json() for r in self.floors],
            "paths": [r.to_json() for r in self.paths],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        return cls(
            mode=data["mode"],
            started_at=data["started_at"],
            duration_s=data["duration_s"],
            machine=data["machine"],
            settings=data.get("settings", {}),
            floors=[Result.from_json(r) for r in data["floors"]],
            paths=[Result.from_json(r) for r in data["paths"]],
        )

    def floor(self, key: str | None) -> Result | None:
        return next((f for f in self.floors if f.key == key and f.has_numbers), None)
