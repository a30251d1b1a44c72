"""Everything the report shows, read from the store as one plain, JSON-ready dict.

Traffic figures are aggregated in SQL on the extracted trace columns (payloads
are never read, so the report works on a large or encrypted store). The other
sources (tasks, evaluations and gate decisions, adapters, routes and shadow
results) are stage tables that may not exist yet: each section is read on its
own and a missing or unreadable source leaves that section empty, with the
reason in ``sources``, instead of failing the whole report. How the savings
are counted: docs/flywheel.md (The report).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from protege.report import stages as S
from protege.report.common import UNASSIGNED, num, task_key
from protege.store import schema

if TYPE_CHECKING:
    from protege.store.db import TraceStore

log = logging.getLogger(__name__)

SERVED_BY = ("teacher", "student", "fallback")
HOUR, DAY = 3600, 86400


def _bucket_size(first: float | None, last: float | None) -> int:
    """Hours while the data spans up to three days, days beyond."""
    if first is None or last is None:
        return HOUR
    return HOUR if last - first <= 3 * DAY else DAY


# --------------------------------------------------------------------------- traffic


def _traffic(store: TraceStore, since: float | None, until: float | None) -> dict[str, Any]:
    """One pass over the traces (SQLite keeps payloads inline, so every scan
    reads the whole table): grouped by task, server, status, time bucket and
    fallback reason; the sections are summed from those groups in Python."""
    t = schema.traces
    conds = []
    if since is not None:
        conds.append(t.c.created_at >= since)
    if until is not None:
        conds.append(t.c.created_at < until)
    with store.read() as conn:
        # Answered from the created_at index.
        span = conn.execute(
            sa.select(sa.func.min(t.c.created_at), sa.func.max(t.c.created_at)).where(*conds)
        ).one()
        bucket_s = _bucket_size(num(span[0]), num(span[1]))
        if store.dialect == "postgresql":
            bucket = sa.cast(sa.func.floor(t.c.created_at / bucket_s), sa.BigInteger)
        else:  # SQLite's CAST truncates, which is floor for positive epochs
            bucket = sa.cast(t.c.created_at / bucket_s, sa.Integer)
        bucket = bucket.label("b")
        groups = conn.execute(
            sa.select(
                t.c.task_id,
                t.c.served_by,
                t.c.status,
                bucket,
                t.c.fallback_reason,
                sa.func.count().label("n"),
                sa.func.sum(t.c.cost_usd).label("cost"),
                sa.func.count(t.c.cost_usd).label("n_cost"),
                sa.func.sum(t.c.latency_ms).label("latency_sum"),
                sa.func.count(t.c.latency_ms).label("n_latency"),
            )
            .where(*conds)
            .group_by(t.c.task_id, t.c.served_by, t.c.status, bucket, t.c.fallback_reason)
        ).all()
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    reasons: dict[tuple[Any, ...], int] = defaultdict(int)
    student: dict[tuple[Any, ...], dict[str, Any]] = {}
    for g in groups:
        key = (g.task_id, g.served_by, g.status)
        r = rows.setdefault(
            key,
            {
                "task_id": g.task_id,
                "served_by": g.served_by,
                "status": g.status,
                "n": 0,
                "cost": 0.0,
                "n_cost": 0,
                "latency_sum": 0.0,
                "n_latency": 0,
            },
        )
        r["n"] += int(g.n)
        r["cost"] += num(g.cost) or 0.0
        r["n_cost"] += int(g.n_cost or 0)
        r["latency_sum"] += num(g.latency_sum) or 0.0
        r["n_latency"] += int(g.n_latency or 0)
        if g.fallback_reason is not None:
            reasons[(g.task_id, g.fallback_reason)] += int(g.n)
        if g.served_by == "student" and g.status == "ok":
            sb = student.setdefault(
                (g.task_id, int(g.b)), {"task_id": g.task_id, "b": int(g.b), "n": 0, "cost": 0.0}
            )
            sb["n"] += int(g.n)
            sb["cost"] += num(g.cost) or 0.0
    return {
        "first": num(span[0]),
        "last": num(span[1]),
        "rows": list(rows.values()),
        "reasons": [{"task_id": k[0], "fallback_reason": k[1], "n": n} for k, n in reasons.items()],
        "bucket_s": bucket_s,
        "student_buckets": list(student.values()),
    }


def _split_reasons(text: str) -> list[str]:
    parts = [p.strip() for p in text.replace("\n", ";").split(";")]
    return [p for p in parts if p] or [text]


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].strip() or reason


# --------------------------------------------------------------------------- assembly


def _section(sources: dict[str, Any], name: str, fn: Callable[[], Any], empty: Any) -> Any:
    try:
        value = fn()
    except Exception as exc:  # a stage table we cannot read must not sink the report
        log.warning("report: %s unavailable: %s", name, exc)
        sources[name] = {"available": False, "error": f"{type(exc).__name__}: {exc}"}
        return empty
    sources[name] = {"available": bool(value)}
    return value


def collect_report(store: TraceStore, *, since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """The report's data: totals, per-task traffic, quality, frontier, fallback
    reasons, savings over time, shadow agreement, gate decisions, adapters."""
    sources: dict[str, Any] = {}
    traffic = _section(sources, "traces", lambda: _traffic(store, since, until), None)
    tasks_info = _section(sources, "tasks", lambda: S.tasks_table(store), {})
    evaluations = _section(sources, "evaluations", lambda: S.evaluations(store), [])
    decisions = _section(sources, "gate_decisions", lambda: S.gate_decisions(store), [])
    adapters = _section(sources, "adapters", lambda: S.adapters(store), [])
    routes = _section(sources, "routes", lambda: S.routes(store), {})
    shadow = _section(sources, "shadow_results", lambda: S.shadow(store, since, until), [])
    if traffic is not None:
        sources["traces"]["available"] = bool(traffic["rows"])

    per_task: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "calls": 0,
            "errors": 0,
            "cost_usd": 0.0,
            "served": {k: 0 for k in SERVED_BY},
            "teacher_cost": 0.0,
            "teacher_cost_n": 0,
            "latency_sum": {k: 0.0 for k in SERVED_BY},
            "latency_n": {k: 0 for k in SERVED_BY},
        }
    )
    for r in (traffic or {}).get("rows", []):
        p = per_task[task_key(r["task_id"])]
        n = int(r["n"])
        who = r["served_by"] if r["served_by"] in SERVED_BY else "teacher"
        p["calls"] += n
        p["served"][who] += n
        if r["status"] != "ok":
            p["errors"] += n
        p["cost_usd"] += num(r["cost"]) or 0.0
        p["latency_sum"][who] += num(r["latency_sum"]) or 0.0
        p["latency_n"][who] += int(r["n_latency"] or 0)
        if who in ("teacher", "fallback") and r["status"] == "ok" and r["n_cost"]:
            p["teacher_cost"] += num(r["cost"]) or 0.0
            p["teacher_cost_n"] += int(r["n_cost"])

    refs = {a["id"]: a["ref"] for a in adapters}
    for item in [*evaluations, *decisions]:
        item["adapter_ref"] = refs.get(item.get("adapter_id") or "")
    latest_eval: dict[str, dict[str, Any]] = {}
    for e in evaluations:
        latest_eval[e["task_id"]] = e  # oldest first, so the last one wins
    latest_gate: dict[str, dict[str, Any]] = {}
    for d in decisions:
        latest_gate[d["task_id"]] = d
    promoted = {a["task_id"]: a["ref"] for a in adapters if a["status"] == "promoted"}
    shadow_by_task: dict[str, dict[str, Any]] = {}
    for s in shadow:
        agg = shadow_by_task.setdefault(s["task_id"], {"n": 0, "compared": 0, "agreed": 0})
        agg["n"] += s["n"]
        agg["compared"] += s["compared"]
        agg["agreed"] += s["agreed"]

    total_calls = sum(p["calls"] for p in per_task.values())
    total_cost = sum(p["cost_usd"] for p in per_task.values())
    all_teacher_n = sum(p["teacher_cost_n"] for p in per_task.values())
    global_teacher = (
        sum(p["teacher_cost"] for p in per_task.values()) / all_teacher_n if all_teacher_n else None
    )

    def teacher_avg(task: str) -> tuple[float | None, str]:
        p = per_task.get(task)
        if p and p["teacher_cost_n"]:
            return p["teacher_cost"] / p["teacher_cost_n"], "traces"
        ev = latest_eval.get(task)
        per_1k = num((ev or {}).get("cost", {}).get("teacher_per_1k"))
        if per_1k is not None:
            return per_1k / 1000.0, "evaluation"
        if global_teacher is not None:
            return global_teacher, "all tasks"
        return None, "unknown"

    # Savings, bucketed in time.
    bucket_s = (traffic or {}).get("bucket_s", HOUR)
    saved_by_bucket: dict[int, dict[str, float]] = defaultdict(lambda: {"calls": 0, "saved_usd": 0.0})
    saved_by_task: dict[str, float] = defaultdict(float)
    unpriced = 0
    for r in (traffic or {}).get("student_buckets", []):
        task = task_key(r["task_id"])
        avg, _ = teacher_avg(task)
        n = int(r["n"])
        b = saved_by_bucket[int(r["b"])]
        b["calls"] += n
        if avg is None:
            unpriced += n
            continue
        saved = n * avg - (num(r["cost"]) or 0.0)
        b["saved_usd"] += saved
        saved_by_task[task] += saved
    savings_series = []
    cumulative = 0.0
    for b in sorted(saved_by_bucket):
        cumulative += saved_by_bucket[b]["saved_usd"]
        savings_series.append(
            {
                "t": b * bucket_s,
                "calls": int(saved_by_bucket[b]["calls"]),
                "saved_usd": saved_by_bucket[b]["saved_usd"],
                "cumulative_usd": cumulative,
            }
        )

    # Fallback reasons: overall by kind, and the most frequent exact reasons.
    by_kind: dict[str, int] = defaultdict(int)
    by_reason: dict[str, int] = defaultdict(int)
    by_task_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in (traffic or {}).get("reasons", []):
        n = int(r["n"])
        for reason in _split_reasons(str(r["fallback_reason"])):
            by_reason[reason] += n
            by_kind[_reason_kind(reason)] += n
            by_task_kind[task_key(r["task_id"])][_reason_kind(reason)] += n

    task_ids = sorted(
        set(per_task) | set(latest_eval) | set(routes) | set(promoted) | set(shadow_by_task),
        key=lambda k: (-per_task[k]["calls"] if k in per_task else 0, k),
    )
    tasks = []
    for task in task_ids:
        p = per_task[task] if task in per_task else None
        info = tasks_info.get(task, {})
        avg, avg_source = teacher_avg(task)
        sh = shadow_by_task.get(task)
        ev = latest_eval.get(task)
        served = dict(p["served"]) if p else {k: 0 for k in SERVED_BY}
        calls = p["calls"] if p else 0
        student_system = next((s for s in (ev or {}).get("systems", []) if s["system"] == "student"), None)
        tasks.append(
            {
                "task_id": task,
                "label": info.get("label"),
                "output_type": info.get("output_type") or (ev or {}).get("output_type"),
                "calls": calls,
                "traffic_share": calls / total_calls if total_calls else None,
                "cost_usd": p["cost_usd"] if p else 0.0,
                "cost_share": p["cost_usd"] / total_cost if p and total_cost else None,
                "errors": p["errors"] if p else 0,
                "served": served,
                "student_share": served["student"] / calls if calls else None,
                "latency_ms": {
                    k: p["latency_sum"][k] / p["latency_n"][k] if p and p["latency_n"][k] else None
                    for k in SERVED_BY
                },
                "teacher_cost_per_call": avg,
                "teacher_cost_source": avg_source,
                "saved_usd": saved_by_task.get(task, 0.0),
                "fallback_reasons": dict(by_task_kind.get(task, {})),
                "route": routes.get(task),
                "promoted_adapter": promoted.get(task),
                "shadow": {
                    **sh,
                    "agreement": sh["agreed"] / sh["compared"] if sh["compared"] else None,
                }
                if sh
                else None,
                "quality": {
                    "evaluation_id": ev["id"],
                    "adapter_id": ev["adapter_id"],
                    "primary_metric": ev["primary_metric"],
                    "student": student_system["value"] if student_system else None,
                    "share_of_teacher": ev["share_of_teacher"],
                }
                if ev
                else None,
                "gate": latest_gate.get(task),
            }
        )

    # Frontier: the newest evaluation of each (task, adapter); its student and,
    # once per task, the baselines and the teacher.
    newest: dict[tuple[str, str | None], dict[str, Any]] = {}
    for e in evaluations:
        newest[(e["task_id"], e["adapter_id"])] = e
    frontier = []
    for (task, adapter), e in sorted(newest.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        for s in e["systems"]:
            if s["system"] != "student" and e is not latest_eval.get(task):
                continue  # baselines and teacher once per task, from its newest evaluation
            cost_1k = s["cost_per_1k"]
            if cost_1k is None and s["system"] == "teacher":
                # No price in the evaluation (its test rows are not live traces): what the
                # teacher costs on this task's live traffic.
                avg, _ = teacher_avg(task)
                cost_1k = None if avg is None else avg * 1000.0
            if cost_1k is None:
                continue
            name = (
                (refs.get(adapter or "", adapter) or "student") if s["system"] == "student" else s["system"]
            )
            frontier.append(
                {
                    "task_id": task,
                    "system": s["system"],
                    "name": name,
                    "adapter_id": adapter if s["system"] == "student" else None,
                    "cost_per_1k": cost_1k,
                    "quality": s["value"],
                    "low": s["low"],
                    "high": s["high"],
                    "metric": e["primary_metric"],
                }
            )

    served_total = {k: sum(t["served"][k] for t in tasks) for k in SERVED_BY}
    saved_total = sum(saved_by_task.values())
    return {
        "generated_at": time.time(),
        "window": {"since": since, "until": until},
        "store": getattr(store, "safe_url", None),
        "sources": sources,
        "totals": {
            "calls": total_calls,
            "served": served_total,
            "student_share": served_total["student"] / total_calls if total_calls else None,
            "errors": sum(t["errors"] for t in tasks),
            "cost_usd": total_cost,
            "saved_usd": saved_total,
            "teacher_only_cost_usd": total_cost + saved_total,
            "unpriced_student_calls": unpriced,
            "first_call_at": (traffic or {}).get("first"),
            "last_call_at": (traffic or {}).get("last"),
            "tasks": sum(1 for t in tasks if t["task_id"] != UNASSIGNED),
        },
        "tasks": tasks,
        "quality": [latest_eval[k] for k in sorted(latest_eval)],
        "frontier": frontier,
        "fallback_reasons": {
            "by_kind": sorted(
                ({"kind": k, "count": v} for k, v in by_kind.items()), key=lambda x: -x["count"]
            ),
            "top": sorted(
                ({"reason": k, "count": v} for k, v in by_reason.items()), key=lambda x: -x["count"]
            )[:20],
            "total": sum(by_kind.values()),
        },
        "savings": {"bucket_s": bucket_s, "series": savings_series},
        "shadow": shadow,
        "gate_decisions": [latest_gate[k] for k in sorted(latest_gate)],
        "adapters": adapters,
    }
