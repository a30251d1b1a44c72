"""Aggregates over captured traces, computed in SQL on the extracted columns.

Payloads are never read (nor decrypted), so ``trace_stats`` stays fast on a
large store and works without the encryption key. Percentiles are nearest
rank on both engines: on PostgreSQL everything is one GROUP BY with
``percentile_disc``; on SQLite, which has no percentile aggregate, one narrow
sequential read of the extracted columns is aggregated in Python (faster
there than window functions or several aggregate queries).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from protege.store import schema

if TYPE_CHECKING:
    from protege.store.db import TraceStore

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


class _Acc:
    __slots__ = ("count", "errors", "prompt", "completion", "cost", "first", "last", "lat", "ttft")

    def __init__(self) -> None:
        self.count = self.errors = self.prompt = self.completion = 0
        self.cost = 0.0
        self.first: float | None = None
        self.last: float | None = None
        self.lat: list[float] = []
        self.ttft: list[float] = []

    def row(self) -> dict[str, Any]:
        self.lat.sort()
        self.ttft.sort()
        out: dict[str, Any] = {
            "count": self.count, "errors": self.errors, "prompt_tokens": self.prompt,
            "completion_tokens": self.completion, "cost_usd": self.cost, "first": self.first, "last": self.last,
        }
        out.update({f"lat_p{p}": _nearest_rank(self.lat, p) if self.lat else None for p in LATENCY_PERCENTILES})
        out.update({f"ttft_p{p}": _nearest_rank(self.ttft, p) if self.ttft else None for p in TTFT_PERCENTILES})
        return out


def _stats_one_pass(
    conn: sa.Connection, key: Any, conds: list[Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """SQLite: one narrow scan of the extracted columns, aggregated here.

    SQLite has no percentile aggregate, and its GROUP BY walks the column's
    index with a random row lookup each, so one sequential read of the eight
    columns beats several aggregate queries; payloads are never read."""
    t = schema.traces
    cols = [t.c.status, t.c.prompt_tokens, t.c.completion_tokens, t.c.cost_usd, t.c.created_at,
            t.c.latency_ms, t.c.ttft_ms, key if key is not None else sa.literal(None)]
    groups: dict[Any, _Acc] = {}
    for status, prompt, completion, cost, created, lat, ttft, k in conn.execute(sa.select(*cols).where(*conds)):
        a = groups.get(k)
        if a is None:
            a = groups[k] = _Acc()
        a.count += 1
        if status == "error":
            a.errors += 1
        if prompt:
            a.prompt += prompt
        if completion:
            a.completion += completion
        if cost:
            a.cost += cost
        if a.first is None or created < a.first:
            a.first = created
        if a.last is None or created > a.last:
            a.last = created
        if lat is not None:
            a.lat.append(lat)
        if ttft is not None:
            a.ttft.append(ttft)
    # The total is the groups merged, not a second accumulation per row.
    total = _Acc()
    for a in groups.values():
        total.count += a.count
        total.errors += a.errors
        total.prompt += a.prompt
        total.completion += a.completion
        total.cost += a.cost
        total.first = a.first if total.first is None else min(total.first, a.first)  # type: ignore[type-var]
        total.last = a.last if total.last is None else max(total.last, a.last)  # type: ignore[type-var]
        total.lat += a.lat
        total.ttft += a.ttft
    if key is None:
        return total.row(), []
    return total.row(), [{"key": k, **a.row()} for k, a in groups.items()]


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
    store: TraceStore,
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
    with store.read() as conn:
        if store.dialect != "postgresql":
            total_row, group_rows = _stats_one_pass(conn, key, conds)
        else:
            cols += _percentile_columns()
            total_row = dict(conn.execute(sa.select(*cols).where(*conds)).one()._mapping)
            group_rows = []
            if key is not None:
                q = sa.select(key.label("key"), *cols).where(*conds).group_by(key)
                group_rows = [dict(r._mapping) for r in conn.execute(q)]
    total = _figures(total_row, None)
    total.pop("key")
    groups = [_figures(r, r["key"]) for r in group_rows if r["count"]]
    groups.sort(key=lambda g: (-g["count"], str(g["key"])))
    return {"by": by, "since": since, "until": until, "filters": {k: v for k, v in filters.items() if v is not None},
            "total": total, "groups": groups}


def recent_traces(
    store: TraceStore,
    *,
    limit: int = 20,
    offset: int = 0,
    since: float | None = None,
    until: float | None = None,
    columns: Sequence[str] = LIST_COLUMNS,
    **filters: Any,
) -> list[dict[str, Any]]:
    """The newest traces' extracted ``columns`` (never payloads, so no key is
    needed), newest first."""
    t = schema.traces
    q = (
        sa.select(*[t.c[c] for c in columns])
        .where(*_conditions(since, until, filters))
        .order_by(t.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    with store.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        r["tools_called"] = json.loads(r["tools_called"]) if r["tools_called"] else []
        r["stream"] = bool(r["stream"])
    return rows
