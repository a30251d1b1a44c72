"""The report's stage sections, each read from its stage's table: tasks,
evaluations and gate decisions, adapters, routes and shadow results."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from protege.report.common import fetch_rows, loads, num, task_key

if TYPE_CHECKING:
    from protege.store.db import TraceStore

SYSTEM_ORDER = ("student", "base_zero_shot", "base_few_shot", "teacher")


def tasks_table(store: TraceStore) -> dict[str, dict[str, Any]]:
    """Labels and output types from the task stage's table, whatever its exact
    columns (the stage owns it; only a few well-known names are read)."""
    if not store.has_table("tasks"):
        return {}
    table = store.reflect("tasks")
    cols = set(table.c.keys())
    key = next((c for c in ("task_id", "id") if c in cols), None)
    if key is None:
        return {}
    rows = fetch_rows(store, sa.select(table))
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        info: dict[str, Any] = {}
        for name in ("label", "name", "title"):
            if r.get(name):
                info["label"] = str(r[name])
                break
        for name in ("output_type", "specialisation_score", "specialization_score", "status"):
            if r.get(name) is not None:
                info[name] = r[name]
        meta = loads(r.get("meta")) or loads(r.get("stats")) or {}
        if isinstance(meta, dict):
            for name in ("label", "output_type"):
                if name not in info and meta.get(name):
                    info[name] = meta[name]
        out[str(r[key])] = info
    return out


def _system_point(name: str, s: dict[str, Any], primary: str, basis: str | None) -> dict[str, Any] | None:
    metrics = (s.get("vs_ground_truth") if basis == "ground_truth" else None) or s.get("metrics") or {}
    iv = metrics.get(primary) or {}
    value = num(iv.get("value"))
    if value is None:
        return None
    return {
        "system": name,
        "value": value,
        "low": num(iv.get("low")),
        "high": num(iv.get("high")),
        "cost_per_1k": num(s.get("cost_per_1k")),
        "seconds_per_call": num(s.get("seconds_per_call")),
        "latency_ms": num(s.get("latency_ms")),
        "tokens_per_s": num(s.get("tokens_per_s")),
        "error": s.get("error"),
    }


def _evaluation(row: dict[str, Any]) -> dict[str, Any] | None:
    rep = loads(row.get("report"))
    if not isinstance(rep, dict):
        return None
    primary = rep.get("primary_metric") or ""
    basis = rep.get("share_basis")
    systems_in = rep.get("systems") or {}
    cost = rep.get("cost") or {}
    rate = num(cost.get("student_usd_per_hour"))
    systems = []
    for name in list(SYSTEM_ORDER) + sorted(set(systems_in) - set(SYSTEM_ORDER)):
        if name not in systems_in:
            continue
        point = _system_point(name, systems_in[name], primary, basis)
        if point is None:
            continue
        if point["cost_per_1k"] is None:
            if name == "teacher":
                point["cost_per_1k"] = num(cost.get("teacher_per_1k"))
            elif rate is not None and point["seconds_per_call"] is not None:
                # The base model runs on the student's hardware: same price per second.
                point["cost_per_1k"] = rate / 3600.0 * point["seconds_per_call"] * 1000.0
        systems.append(point)
    share = rep.get("share_of_teacher") or {}
    return {
        "id": row.get("id"),
        "task_id": row.get("task_id"),
        "adapter_id": row.get("adapter_id"),
        "created_at": num(row.get("created_at")),
        "output_type": rep.get("output_type"),
        "primary_metric": primary,
        "validity_metric": rep.get("validity_metric"),
        "basis": basis,
        "n_examples": rep.get("n_examples"),
        "dataset_version": rep.get("dataset_version"),
        "systems": systems,
        "share_of_teacher": {k: num(share.get(k)) for k in ("value", "low", "high")} if share else None,
        "cost": {
            k: (num(v) if k != "teacher_source" and k != "student_device" else v) for k, v in cost.items()
        },
    }


def evaluations(store: TraceStore) -> list[dict[str, Any]]:
    if not store.has_table("evaluations"):
        return []
    q = sa.text("SELECT id, task_id, adapter_id, created_at, report FROM evaluations ORDER BY created_at, id")
    rows = fetch_rows(store, q)
    return [e for e in (_evaluation(r) for r in rows) if e is not None]


def gate_decisions(store: TraceStore) -> list[dict[str, Any]]:
    if not store.has_table("gate_decisions"):
        return []
    q = sa.text(
        "SELECT id, task_id, adapter_id, evaluation_id, decision, reasons, thresholds, created_at "
        "FROM gate_decisions ORDER BY created_at, id"
    )
    rows = fetch_rows(store, q)
    out = []
    for r in rows:
        evidence = loads(r.get("reasons"))
        evidence = evidence if isinstance(evidence, dict) else {}
        checks = evidence.get("checks")
        out.append(
            {
                "id": r["id"],
                "task_id": r["task_id"],
                "adapter_id": r.get("adapter_id"),
                "evaluation_id": r.get("evaluation_id"),
                "decision": r["decision"],
                "status": evidence.get("status"),
                "checks": [
                    {k: c.get(k) for k in ("name", "ok", "value", "threshold", "gap", "message")}
                    for c in checks or []
                    if isinstance(c, dict)
                ],
                "thresholds": loads(r.get("thresholds")) or {},
                "floor": evidence.get("floor"),
                "floor_curve": evidence.get("floor_curve"),
                "created_at": num(r.get("created_at")),
            }
        )
    return out


def adapters(store: TraceStore) -> list[dict[str, Any]]:
    if not store.has_table("adapters"):
        return []
    q = sa.text(
        "SELECT id, task_id, version, base_model, status, status_reason, created_at, updated_at "
        "FROM adapters ORDER BY task_id, version"
    )
    rows = fetch_rows(store, q)
    for r in rows:
        r["ref"] = f"{r['task_id']}:v{r['version']}"
        r["created_at"] = num(r["created_at"])
        r["updated_at"] = num(r["updated_at"])
    return rows


def routes(store: TraceStore) -> dict[str, dict[str, Any]]:
    if not store.has_table("routes"):
        return {}
    q = sa.text("SELECT task_id, mode, canary_pct, reason, updated_at FROM routes")
    rows = fetch_rows(store, q)
    return {
        r["task_id"]: {
            "mode": r["mode"],
            "canary_pct": num(r["canary_pct"]),
            "label": f"canary:{num(r['canary_pct']) or 0:g}" if r["mode"] == "canary" else r["mode"],
            "reason": r.get("reason"),
            "updated_at": num(r["updated_at"]),
        }
        for r in rows
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion: sane at 0 and 1 and for small n."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def shadow(store: TraceStore, since: float | None, until: float | None) -> list[dict[str, Any]]:
    if not store.has_table("shadow_results"):
        return []
    where, params = [], {}
    if since is not None:
        where.append("created_at >= :since")
        params["since"] = since
    if until is not None:
        where.append("created_at < :until")
        params["until"] = until
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    q = sa.text(
        "SELECT task_id, adapter, COUNT(*) AS n, SUM(valid) AS n_valid, COUNT(agree) AS n_compared, "
        "SUM(agree) AS n_agree, AVG(latency_ms) AS latency_ms FROM shadow_results"
        f"{clause} GROUP BY task_id, adapter ORDER BY task_id, adapter"
    )
    rows = fetch_rows(store, q, params)
    out = []
    for r in rows:
        n, compared = int(r["n"] or 0), int(r["n_compared"] or 0)
        agreed, valid = int(r["n_agree"] or 0), int(r["n_valid"] or 0)
        low, high = wilson(agreed, compared) if compared else (None, None)
        out.append(
            {
                "task_id": task_key(r["task_id"]),
                "adapter": r["adapter"],
                "n": n,
                "compared": compared,
                "agreed": agreed,
                "agreement": agreed / compared if compared else None,
                "agreement_low": low,
                "agreement_high": high,
                "valid_rate": valid / n if n else None,
                "latency_ms": num(r["latency_ms"]),
            }
        )
    return out
