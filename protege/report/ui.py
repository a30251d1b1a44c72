"""The live report and trace browser: a small Starlette app the gateway mounts
at ``/ui`` (``protege serve``), read from the store on every request.

- ``/``: the report page, with links into the trace browser (``?since=24h``
  and ``until`` narrow the traffic it covers);
- ``/traces``: traces filtered by task, who served them, status and time
  range, newest first, paginated on the server;
- ``/traces/{id}``: one trace: its request messages, response, tool calls
  (arguments pretty-printed), error, fallback reason, shadow result, feedback;
- ``/api/report``, ``/api/traces``, ``/api/traces/{id}``: the same as JSON.

Links are built from ``scope["root_path"]``, so the app works at any mount
point. Trace content is untrusted: everything is escaped, the pages carry no
script, and a Content-Security-Policy forbids scripts and remote loads anyway.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from protege.report.data import collect_report
from protege.report.html import page, render_html
from protege.report.pages import nav, render_trace, render_trace_list
from protege.report.svg import esc
from protege.stats import recent_traces
from protege.store import EncryptionError, schema

if TYPE_CHECKING:
    from protege.store.db import TraceStore

PER_PAGE = 50
MAX_PER_PAGE = 500
LIST_COLUMNS = (
    "id",
    "created_at",
    "source",
    "client_id",
    "session_id",
    "task_id",
    "task_tag",
    "model",
    "upstream_model",
    "served_by",
    "adapter",
    "status",
    "http_status",
    "error",
    "fallback_reason",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "tools_called",
    "finish_reason",
    "stream",
)
FILTERS = ("task_id", "served_by", "status", "since", "until")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadRequest(ValueError):
    pass


def parse_time(text: str | None, *, now: float | None = None) -> float | None:
    """'24h' (that long ago), an ISO date or datetime (UTC unless it says), or epoch seconds."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    m = _DURATION.match(text)
    if m:
        return (now if now is not None else time.time()) - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"not a time: {text!r} (use e.g. 24h, 7d, 2026-01-31T12:00 or epoch seconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _int(value: str | None, default: int, lo: int, hi: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {value!r}") from None
    return max(lo, min(hi, n))


def _query(request: Request) -> dict[str, Any]:
    """Filters, page and page size from the query string."""
    q = request.query_params
    raw = {k: (q.get(k) or "").strip() or None for k in FILTERS}
    filters: dict[str, Any] = {k: raw[k] for k in ("task_id", "served_by", "status") if raw[k]}
    since, until = parse_time(raw["since"]), parse_time(raw["until"])
    if since is not None:
        filters["since"] = since
    if until is not None:
        filters["until"] = until
    per_page = _int(q.get("per_page"), PER_PAGE, 1, MAX_PER_PAGE, "per_page")
    page_no = _int(q.get("page"), 1, 1, 10**9, "page")
    return {"raw": raw, "filters": filters, "page": page_no, "per_page": per_page}


def _root(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={"Content-Security-Policy": CSP})


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


def _json(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, ensure_ascii=False, default=_json_default)
    return Response(body, status_code=status, media_type="application/json")


# --------------------------------------------------------------------------- store reads


def _columns_of(trace: Any) -> dict[str, Any]:
    return {c: getattr(trace, c) for c in LIST_COLUMNS}


def list_rows(store: TraceStore, filters: dict[str, Any], limit: int, offset: int) -> list[dict[str, Any]]:
    """A page of traces (columns only), newest first. Falls back to reading the
    clear columns when payloads are encrypted and this process has no key."""
    try:
        return [_columns_of(t) for t in store.list_traces(limit=limit, offset=offset, **filters)]
    except EncryptionError:
        return recent_traces(store, limit=limit, offset=offset, columns=LIST_COLUMNS, **filters)


def distinct_tasks(store: TraceStore) -> list[str]:
    t = schema.traces
    with store.read() as conn:
        rows = conn.execute(sa.select(t.c.task_id).where(t.c.task_id.is_not(None)).distinct()).all()
    return sorted(str(r[0]) for r in rows)


def shadow_for(store: TraceStore, trace_id: str) -> dict[str, Any] | None:
    if not store.has_table("shadow_results"):
        return None
    q = sa.text(
        "SELECT task_id, adapter, agree, valid, reasons, student_response, latency_ms, created_at "
        "FROM shadow_results WHERE trace_id = :id"
    )
    with store.read() as conn:
        row = conn.execute(q, {"id": trace_id}).first()
    if row is None:
        return None
    out = dict(row._mapping)
    for k in ("reasons", "student_response"):
        try:
            out[k] = json.loads(out[k]) if out[k] else None
        except ValueError:
            pass
    return out


# --------------------------------------------------------------------------- app


def create_ui_app(store: TraceStore) -> Starlette:
    """The live report and trace browser over ``store``, mountable at any prefix."""

    def _window(request: Request) -> dict[str, float | None]:
        q = request.query_params
        return {"since": parse_time(q.get("since")), "until": parse_time(q.get("until"))}

    def report_page(request: Request) -> Response:
        try:
            window = _window(request)
        except BadRequest as exc:
            body = f'<section><h2>Bad request</h2><p class="error">{esc(exc)}</p></section>'
            return _html(page("protege report", body, nav=nav(_root(request))), 400)
        return _html(render_html(collect_report(store, **window), base=_root(request)))

    def api_report(request: Request) -> Response:
        try:
            window = _window(request)
        except BadRequest as exc:
            return _json({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
        return _json(collect_report(store, **window))

    def traces_page(request: Request) -> Response:
        root = _root(request)
        try:
            q = _query(request)
        except BadRequest as exc:
            q = {"raw": {k: request.query_params.get(k) for k in FILTERS}, "page": 1, "per_page": PER_PAGE}
            return _html(render_trace_list(root, [], 0, q, distinct_tasks(store), error=str(exc)), 400)
        total = store.count_traces(**q["filters"])
        rows = list_rows(store, q["filters"], q["per_page"], (q["page"] - 1) * q["per_page"])
        return _html(render_trace_list(root, rows, total, q, distinct_tasks(store)))

    def api_traces(request: Request) -> Response:
        try:
            q = _query(request)
        except BadRequest as exc:
            return _json({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
        total = store.count_traces(**q["filters"])
        rows = list_rows(store, q["filters"], q["per_page"], (q["page"] - 1) * q["per_page"])
        return _json(
            {
                "total": total,
                "page": q["page"],
                "per_page": q["per_page"],
                "filters": q["filters"],
                "traces": rows,
            }
        )

    def _load(trace_id: str) -> tuple[dict[str, Any] | None, Any, str]:
        try:
            trace = store.get_trace(trace_id)
        except EncryptionError as exc:
            rows = store.trace_columns(list(LIST_COLUMNS), ids=[trace_id])
            if not rows:
                return None, None, ""
            rows[0]["tools_called"] = json.loads(rows[0]["tools_called"] or "[]")
            return rows[0], None, str(exc)
        if trace is None:
            return None, None, ""
        return _columns_of(trace), trace, ""

    def trace_page(request: Request) -> Response:
        root = _root(request)
        trace_id = request.path_params["trace_id"]
        cols, trace, note = _load(trace_id)
        if cols is None:
            body = f'<section><h2>Not found</h2><p>No trace {esc(trace_id)}.</p><p><a href="{esc(root)}/traces">all traces</a></p></section>'
            return _html(page("protege: trace not found", body, nav=nav(root)), 404)
        extra = {"shadow": shadow_for(store, cols["id"]), "feedback": store.feedback_for(trace_id=cols["id"])}
        return _html(render_trace(root, cols, trace, extra, note))

    def api_trace(request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        cols, trace, note = _load(trace_id)
        if cols is None:
            return _json({"error": {"message": f"no trace {trace_id}", "type": "not_found"}}, 404)
        out = trace.to_dict() if trace is not None else dict(cols)
        out["shadow"] = shadow_for(store, cols["id"])
        if note:
            out["note"] = note
        return _json(out)

    routes = [
        Route("/", report_page),
        Route("/traces", traces_page),
        Route("/traces/{trace_id:str}", trace_page),
        Route("/api/report", api_report),
        Route("/api/traces", api_traces),
        Route("/api/traces/{trace_id:str}", api_trace),
    ]
    return Starlette(routes=routes)
