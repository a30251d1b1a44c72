"""What an evaluation produced, and where it is kept: ``EvalReport`` (one
system's results per ``SystemResult``) and the ``evaluations`` table's reads
and writes. ``protege.evaluate.runner`` makes them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from protege.evaluate.bootstrap import Interval

if TYPE_CHECKING:
    from protege.store.db import TraceStore

__all__ = ["EvalReport", "SystemResult", "load_report", "save_report"]


@dataclass
class SystemResult:
    name: str
    metrics: dict[str, Interval]
    vs_ground_truth: dict[str, Interval] | None = None
    # Batched generation time per answer: what throughput, and so cost, is based on.
    seconds_per_call: float | None = None
    tokens_per_s: float | None = None
    # Median time to answer one request alone (batch of 1), as a caller waits for it.
    latency_ms: float | None = None
    cost_per_1k: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "vs_ground_truth": {k: v.to_dict() for k, v in self.vs_ground_truth.items()}
            if self.vs_ground_truth
            else None,
            "seconds_per_call": self.seconds_per_call,
            "tokens_per_s": self.tokens_per_s,
            "latency_ms": self.latency_ms,
            "cost_per_1k": self.cost_per_1k,
            "error": self.error,
        }


@dataclass
class EvalReport:
    task_id: str
    adapter_id: str | None
    dataset_version: str | None
    dataset_hash: str | None
    output_type: str
    primary_metric: str
    validity_metric: str
    n_examples: int
    systems: dict[str, SystemResult]
    share_of_teacher: Interval | None = None
    share_basis: str | None = None  # "ground_truth" | "reference"
    cost: dict[str, Any] = field(default_factory=dict)
    bfcl: dict[str, Any] | None = None
    # Per test example, for the gate's confidence floor: the student's
    # confidence, its and the teacher's score on the share's basis, validity.
    selective: dict[str, list[Any]] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    created_at: float = field(default_factory=time.time)
    answers_path: str | None = None  # every answer, one JSON line each (protege.evaluate.answers)

    def metric(self, system: str, name: str | None = None) -> Interval | None:
        res = self.systems.get(system)
        return res.metrics.get(name or self.primary_metric) if res else None

    @property
    def validity(self) -> float | None:
        iv = self.metric("student", self.validity_metric)
        return None if iv is None else iv.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "adapter_id": self.adapter_id,
            "dataset_version": self.dataset_version,
            "dataset_hash": self.dataset_hash,
            "output_type": self.output_type,
            "primary_metric": self.primary_metric,
            "validity_metric": self.validity_metric,
            "n_examples": self.n_examples,
            "systems": {k: v.to_dict() for k, v in self.systems.items()},
            "share_of_teacher": self.share_of_teacher.to_dict() if self.share_of_teacher else None,
            "share_basis": self.share_basis,
            "cost": self.cost,
            "bfcl": self.bfcl,
            "selective": self.selective,
            "config": self.config,
            "created_at": self.created_at,
            "answers_path": self.answers_path,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        def iv(x: dict[str, Any] | None) -> Interval | None:
            if not x:
                return None
            return Interval(*(float("nan") if x.get(k) is None else x[k] for k in ("value", "low", "high")))

        systems = {}
        for name, s in (d.get("systems") or {}).items():
            systems[name] = SystemResult(
                name=name,
                metrics={k: iv(v) for k, v in (s.get("metrics") or {}).items()},  # type: ignore[misc]
                vs_ground_truth={k: iv(v) for k, v in s["vs_ground_truth"].items()}  # type: ignore[misc]
                if s.get("vs_ground_truth")
                else None,
                seconds_per_call=s.get("seconds_per_call"),
                tokens_per_s=s.get("tokens_per_s"),
                latency_ms=s.get("latency_ms"),
                cost_per_1k=s.get("cost_per_1k"),
                error=s.get("error"),
            )
        return cls(
            task_id=d["task_id"],
            adapter_id=d.get("adapter_id"),
            dataset_version=d.get("dataset_version"),
            dataset_hash=d.get("dataset_hash"),
            output_type=d["output_type"],
            primary_metric=d["primary_metric"],
            validity_metric=d["validity_metric"],
            n_examples=d["n_examples"],
            systems=systems,
            share_of_teacher=iv(d.get("share_of_teacher")),
            share_basis=d.get("share_basis"),
            cost=d.get("cost") or {},
            bfcl=d.get("bfcl"),
            selective=d.get("selective"),
            config=d.get("config") or {},
            id=d.get("id"),
            created_at=d.get("created_at") or 0.0,
            answers_path=d.get("answers_path"),
        )


# --------------------------------------------------------------------------- inputs


def save_report(store: TraceStore, report: EvalReport) -> str:
    from protege.evaluate.migrations import evaluations
    from protege.ids import new_id

    report.id = report.id or new_id()
    summary = {
        name: {k: v.value for k, v in res.metrics.items()}
        for name, res in report.systems.items()
        if res.metrics
    }
    if report.share_of_teacher:
        summary["share_of_teacher"] = report.share_of_teacher.to_dict()  # type: ignore[assignment]
    with store.write() as conn:
        conn.execute(
            evaluations.insert().values(
                id=report.id,
                task_id=report.task_id,
                adapter_id=report.adapter_id,
                dataset_hash=report.dataset_hash,
                created_at=report.created_at,
                metrics=json.dumps(summary, default=_nan_none),
                report=json.dumps(_clean(report.to_dict()), default=_nan_none),
            )
        )
    return report.id


def _nan_none(x: Any) -> Any:
    return None if isinstance(x, float) and np.isnan(x) else str(x)


def _clean(x: Any) -> Any:
    if isinstance(x, float) and (np.isnan(x) or np.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.floating | np.integer):
        return _clean(x.item())
    return x


def load_report(
    store: TraceStore, *, evaluation_id: str | None = None, task_id: str | None = None, adapter_id: str | None = None
) -> EvalReport | None:
    """A stored evaluation by id, or the newest for a task (and adapter)."""
    import sqlalchemy as sa

    from protege.evaluate.migrations import evaluations as t

    q = sa.select(t.c.report)
    if evaluation_id:
        q = q.where(t.c.id == evaluation_id)
    if task_id:
        q = q.where(t.c.task_id == task_id)
    if adapter_id:
        q = q.where(t.c.adapter_id == adapter_id)
    q = q.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(1)
    with store.read() as conn:
        row = conn.execute(q).first()
    return EvalReport.from_dict(json.loads(row[0])) if row else None
