"""Aggregates over captured traces, computed in SQL on the extracted columns.

Payloads are never read (nor decrypted), so ``trace_stats`` stays fast on a
large store and works without the encryption key. Percentiles are nearest
rank on both engines: ``percentile_disc`` inside the GROUP BY on PostgreSQL;
on SQLite, which has no percentile aggregate, one narrow read of the timing
columns ranked in Python (faster there than window functions).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from protege.store import schema

# CLI name -> column.
GROUP_BY = {
    "model": "model",
    "upstream_model": "upstream_model",
    "client": "client_id",
    "task": "task_tag",
    "task_id": "task_id",
    "served_by": "served_by",
    "status": "status",
    "source": "source",
    "session": "session_id",
}
LATENCY_PERCENTILES = (50, 95, 99)
TTFT_PERCENTILES = (50,)

# Columns a listing shows; never the payloads.
LIST_COLUMNS = (
    "id", "created_at", "source", "client_id", "session_id", "task_tag", "task_id", "model",
    "upstream_model", "served_by", "adapter", "status", "http_status", "error", "latency_ms", "ttft_ms",
    "prompt_tokens", "completion_tokens", "cost_usd", "tools_called", "finish_reason", "stream",
)


def _conditions(since: float | None, until: float | None, filters: dict[str, Any]) -> list[Any]:
    t = schema.traces
    conds: list[Any] = []
    if since is not None:
        conds.append(t.c.created_at >= since)
    if until is not None:
        conds.append(t.c.created_at < until)
    for key, value in filters.items():
        if value is None:
            continue
        if key not in t.c or key in ("request", "response"):
            raise ValueError(f"unknown trace filter {key!r}")
        conds.append(t.c[key] == value)
    return conds


def _nearest_rank(values: list[float], p: int) -> float:
    return float(values[(len(values) * p + 99) // 100 - 1])


def _percentiles_python(
    conn: sa.Connection, key: Any, conds: list[Any]
) -> tuple[dict[str, Any], dict[Any, dict[str, Any]]]:
    """SQLite has no percentile aggregate: read the two timing columns (and the
    group key) in one pass and rank in Python. Payloads are never touched."""
    t = schema.traces
    cols = [t.c.latency_ms, t.c.ttft_ms] + ([key] if key is not None else [])
    q = sa.select(*cols).where(sa.or_(t.c.latency_ms.is_not(None), t.c.ttft_ms.is_not(None)), *conds)
    lat_all: list[float] = []
    ttft_all: list[float] = []
    per: dict[Any, tuple[list[float], list[float]]] = {}
    for row in conn.execute(q):
        lat, ttft = row[0], row[1]
        bucket = per.setdefault(row[2], ([], [])) if key is not None else None
        if lat is not None:
            lat_all.append(lat)
            if bucket is not None:
                bucket[0].append(lat)
        if ttft is not None:
            ttft_all.append(ttft)
            if bucket is not None:
                bucket[1].append(ttft)

    def figures(lat: list[float], ttft: list[float]) -> dict[str, Any]:
        lat.sort()
        ttft.sort()
        out: dict[str, Any] = {f"lat_p{p}": _nearest_rank(lat, p) if lat else None for p in LATENCY_PERCENTILES}
        out.update({f"ttft_p{p}": _nearest_rank(ttft, p) if ttft else None for p in TTFT_PERCENTILES})
        return out

    return figures(lat_all, ttft_all), {k: figures(*v) for k, v in per.items()}


def _percentile_columns() -> list[Any]:
    """PostgreSQL: ``percentile_disc`` is the nearest-rank percentile, computed
    in the same GROUP BY as the counts."""
    t = schema.traces
    cols = [sa.func.percentile_disc(p / 100).within_group(t.c.latency_ms).label(f"lat_p{p}") for p in LATENCY_PERCENTILES]
    cols += [sa.func.percentile_disc(p / 100).within_group(t.c.ttft_ms).label(f"ttft_p{p}") for p in TTFT_PERCENTILES]
    return cols


def _figures(row: dict[str, Any], key: Any) -> dict[str, Any]:
    count = int(row["count"] or 0)
    errors = int(row["errors"] or 0)

    def f(name: str) -> float | None:
        v = row.get(name)
        return None if v is None else float(v)

    return {
        "key": key,
        "count": count,
        "errors": errors,
        "error_rate": errors / count if count else 0.0,
        "prompt_tokens": int(row["prompt_tokens"] or 0),
        "completion_tokens": int(row["completion_tokens"] or 0),
        "cost_usd": float(row["cost_usd"] or 0.0),
        "first_at": row["first"],
        "last_at": row["last"],
        "latency_ms": {f"p{p}": f(f"lat_p{p}") for p in LATENCY_PERCENTILES},
        "ttft_ms": {f"p{p}": f(f"ttft_p{p}") for p in TTFT_PERCENTILES},
    }


def trace_stats(
    store: Any,
    *,
    by: str | None = None,
    since: float | None = None,
    until: float | None = None,
    **filters: Any,
) -> dict[str, Any]:
    """Counts, error rate, tokens, cost and latency/TTFT percentiles (nearest
    rank) of the traces matching ``filters`` (column=value) in [since, until),
    overall and per ``by`` (one of ``GROUP_BY``)."""
    if by is not None and by not in GROUP_BY:
        raise ValueError(f"cannot group by {by!r} (use one of {', '.join(GROUP_BY)})")
    conds = _conditions(since, until, filters)
    t = schema.traces
    key = t.c[GROUP_BY[by]] if by else None
    cols = [
        sa.func.count().label("count"),
        sa.func.sum(sa.case((t.c.status == "error", 1), else_=0)).label("errors"),
        sa.func.sum(t.c.prompt_tokens).label("prompt_tokens"),
        sa.func.sum(t.c.completion_tokens).label("completion_tokens"),
        sa.func.sum(t.c.cost_usd).label("cost_usd"),
        sa.func.min(t.c.created_at).label("first"),
        sa.func.max(t.c.created_at).label("last"),
    ]
    in_sql = store.engine.dialect.name == "postgresql"
    if in_sql:
        cols += _percentile_columns()
    with store.engine.connect() as conn:
        total_row = dict(conn.execute(sa.select(*cols).where(*conds)).one()._mapping)
        group_rows = []
        if key is not None:
            q = sa.select(key.label("key"), *cols).where(*conds).group_by(key)
            group_rows = [dict(r._mapping) for r in conn.execute(q)]
        if not in_sql:
            total_pct, group_pct = _percentiles_python(conn, key, conds)
            total_row.update(total_pct)
            for r in group_rows:
                r.update(group_pct.get(r["key"], {}))
    total = _figures(total_row, None)
    total.pop("key")
    groups = [_figures(r, r["key"]) for r in group_rows if r["count"]]
    groups.sort(key=lambda g: (-g["count"], str(g["key"])))
    return {"by": by, "since": since, "until": until, "filters": {k: v for k, v in filters.items() if v is not None},
            "total": total, "groups": groups}


def recent_traces(
    store: Any, *, limit: int = 20, since: float | None = None, until: float | None = None, **filters: Any
) -> list[dict[str, Any]]:
    """The newest traces' extracted columns (no payloads), newest first."""
    t = schema.traces
    q = (
        sa.select(*[t.c[c] for c in LIST_COLUMNS])
        .where(*_conditions(since, until, filters))
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        r["tools_called"] = json.loads(r["tools_called"]) if r["tools_called"] else []
        r["stream"] = bool(r["stream"])
    return rows
