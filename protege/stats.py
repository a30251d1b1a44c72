"""Aggregates over captured traces, computed in SQL on the extracted columns.

Payloads are never read (nor decrypted), so ``trace_stats`` stays fast on a
large store and works without the encryption key. Percentiles use the
nearest-rank method with window functions, which SQLite (>= 3.25) and
PostgreSQL both run, so the two engines give the same figures.
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


def _percentiles(
    conn: sa.Connection, key: Any, value: Any, conds: list[Any], percents: tuple[int, ...]
) -> dict[Any, dict[str, float]]:
    """{group key: {"p50": v, ...}} by nearest rank: the ceil(p/100 * n)-th value."""
    over = {"partition_by": key} if key is not None else {}
    inner = (
        sa.select(
            (key if key is not None else sa.literal(None)).label("k"),
            value.label("v"),
            sa.func.row_number().over(order_by=value, **over).label("rn"),
            sa.func.count().over(**over).label("n"),
        )
        .where(value.is_not(None), *conds)
        .subquery()
    )
    ranks = {p: (inner.c.n * p + 99) // 100 for p in percents}
    q = sa.select(inner.c.k, inner.c.rn, inner.c.n, inner.c.v).where(sa.or_(*[inner.c.rn == r for r in ranks.values()]))
    out: dict[Any, dict[str, float]] = {}
    for k, rn, n, v in conn.execute(q):
        for p in percents:
            if rn == (n * p + 99) // 100:
                out.setdefault(k, {})[f"p{p}"] = float(v)
    return out


def _summaries(conn: sa.Connection, key: Any, conds: list[Any]) -> list[dict[str, Any]]:
    t = schema.traces
    cols = [
        sa.func.count().label("count"),
        sa.func.sum(sa.case((t.c.status == "error", 1), else_=0)).label("errors"),
        sa.func.sum(t.c.prompt_tokens).label("prompt_tokens"),
        sa.func.sum(t.c.completion_tokens).label("completion_tokens"),
        sa.func.sum(t.c.cost_usd).label("cost_usd"),
        sa.func.min(t.c.created_at).label("first"),
        sa.func.max(t.c.created_at).label("last"),
    ]
    if key is not None:
        q = sa.select(key.label("key"), *cols).where(*conds).group_by(key)
    else:
        q = sa.select(sa.literal(None).label("key"), *cols).where(*conds)
    rows = [dict(r._mapping) for r in conn.execute(q)]
    lat = _percentiles(conn, key, t.c.latency_ms, conds, LATENCY_PERCENTILES)
    ttft = _percentiles(conn, key, t.c.ttft_ms, conds, TTFT_PERCENTILES)
    out = []
    for r in rows:
        count = int(r["count"] or 0)
        if key is not None and count == 0:
            continue
        errors = int(r["errors"] or 0)
        empty = {f"p{p}": None for p in LATENCY_PERCENTILES}
        out.append({
            "key": r["key"],
            "count": count,
            "errors": errors,
            "error_rate": errors / count if count else 0.0,
            "prompt_tokens": int(r["prompt_tokens"] or 0),
            "completion_tokens": int(r["completion_tokens"] or 0),
            "cost_usd": float(r["cost_usd"] or 0.0),
            "first_at": r["first"],
            "last_at": r["last"],
            "latency_ms": {**empty, **lat.get(r["key"], {})},
            "ttft_ms": {"p50": None, **ttft.get(r["key"], {})},
        })
    out.sort(key=lambda g: (-g["count"], str(g["key"])))
    return out


def trace_stats(
    store: Any,
    *,
    by: str | None = None,
    since: float | None = None,
    until: float | None = None,
    **filters: Any,
) -> dict[str, Any]:
    """Counts, error rate, tokens, cost and latency/TTFT percentiles of the
    traces matching ``filters`` (column=value) in [since, until), overall and
    per ``by`` (one of ``GROUP_BY``)."""
    if by is not None and by not in GROUP_BY:
        raise ValueError(f"cannot group by {by!r} (use one of {', '.join(GROUP_BY)})")
    conds = _conditions(since, until, filters)
    t = schema.traces
    with store.engine.connect() as conn:
        total = _summaries(conn, None, conds)[0]
        groups = _summaries(conn, t.c[GROUP_BY[by]], conds) if by else []
    total.pop("key")
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
