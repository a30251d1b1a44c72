"""A flywheel run's record and its steps: each step a row in
``flywheel_steps`` with its outcome, so a run that crashed resumes where it
stopped and a finished step is never redone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from protege.flywheel.config import FlywheelConfig
from protege.flywheel.migrations import runs_table, steps_table
from protege.ids import new_id

if TYPE_CHECKING:
    from protege.store.db import TraceStore


class StepFailed(RuntimeError):
    """A flywheel step raised; the run is stored as failed and can resume."""


@dataclass
class FlywheelReport:
    run_id: str
    status: str = "running"
    resumed: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def task(self, task_id: str) -> dict[str, Any]:
        return self.tasks.setdefault(task_id, {"task_id": task_id})

    def trained(self) -> list[str]:
        return [s["task_id"] for s in self.steps if s["name"] == "train" and s["status"] == "done"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "resumed": self.resumed,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "tasks": self.tasks,
            "steps": self.steps,
        }


Progress = Callable[[str], None]


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str)


class Run:
    def __init__(self, store: TraceStore, cfg: FlywheelConfig, report: FlywheelReport, say: Progress) -> None:
        self.store = store
        self.cfg = cfg
        self.report = report
        self.say = say
        self.seq = 0
        with store.read() as conn:
            rows = conn.execute(sa.select(steps_table).where(steps_table.c.run_id == report.run_id)).all()
        self.done = {r.step: r for r in rows if r.status == "done"}
        self.seq = max((r.seq for r in rows), default=-1) + 1

    def step(self, name: str, task_id: str | None, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        key = f"{name}:{task_id}" if task_id else name
        prev = self.done.get(key)
        if prev is not None:
            out = json.loads(prev.outcome or "{}")
            self.report.steps.append(
                {"step": key, "name": name, "task_id": task_id, "status": "done", "resumed": True, "outcome": out,
                 "reason": prev.reason}
            )
            self.say(f"{key}: done in an earlier attempt")
            return out
        now = time.time()
        row = {"run_id": self.report.run_id, "step": key, "seq": self.seq, "name": name, "task_id": task_id,
               "status": "running", "outcome": None, "reason": None, "error": None, "started_at": now,
               "finished_at": None}
        self.seq += 1
        with self.store.write() as conn:
            conn.execute(
                steps_table.delete().where(steps_table.c.run_id == self.report.run_id, steps_table.c.step == key)
            )
            conn.execute(steps_table.insert().values(**row))
        self.say(f"{key} ...")
        try:
            out = fn() or {}
        except Exception as exc:
            self._finish(key, "failed", None, None, f"{type(exc).__name__}: {exc}")
            self.report.steps.append({"step": key, "name": name, "task_id": task_id, "status": "failed",
                                      "error": f"{type(exc).__name__}: {exc}"})
            raise StepFailed(f"step {key} failed: {type(exc).__name__}: {exc}") from exc
        reason = out.get("reason") if isinstance(out.get("reason"), str) else None
        self._finish(key, "done", out, reason, None)
        self.report.steps.append({"step": key, "name": name, "task_id": task_id, "status": "done",
                                  "resumed": False, "outcome": out, "reason": reason})
        return out

    def _finish(self, key: str, status: str, out: Any, reason: str | None, error: str | None) -> None:
        with self.store.write() as conn:
            conn.execute(
                steps_table.update()
                .where(steps_table.c.run_id == self.report.run_id, steps_table.c.step == key)
                .values(status=status, outcome=None if out is None else dumps(out), reason=reason, error=error,
                        finished_at=time.time())
            )


def start_run(store: TraceStore, cfg: FlywheelConfig, resume: bool) -> FlywheelReport:
    if resume:
        with store.read() as conn:
            last = conn.execute(sa.select(runs_table).order_by(runs_table.c.started_at.desc()).limit(1)).first()
        if last is not None and last.status in ("running", "failed"):
            with store.write() as conn:
                conn.execute(
                    runs_table.update().where(runs_table.c.id == last.id)
                    .values(status="running", error=None, resumed=int(last.resumed) + 1)
                )
            return FlywheelReport(run_id=last.id, resumed=True)
    run_id = new_id()
    with store.write() as conn:
        conn.execute(runs_table.insert().values(
            id=run_id, status="running", config=dumps(cfg.to_dict()), summary=None, error=None,
            started_at=time.time(), finished_at=None, resumed=0,
        ))
    return FlywheelReport(run_id=run_id)


def end_run(store: TraceStore, report: FlywheelReport) -> None:
    with store.write() as conn:
        conn.execute(
            runs_table.update().where(runs_table.c.id == report.run_id).values(
                status=report.status, error=report.error, finished_at=time.time(),
                summary=dumps({"tasks": report.tasks, "seconds": round(report.seconds, 2)}),
            )
        )
