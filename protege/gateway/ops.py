"""The gateway's endpoints beside the chat path: feedback on a trace or a
session, ``/health`` and the Prometheus ``/metrics``, each behind the keys.
Each takes the ``protege.gateway.app.Gateway`` that serves it."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from protege.gateway.errors import error_payload
from protege.store.records import Feedback

log = logging.getLogger("protege.gateway")


async def feedback(gw: Any, request: Request) -> Response:
    denied, _ = gw.check_key(request)
    if denied is not None:
        return denied

    def bad(message: str, param: str | None = None) -> Response:
        return JSONResponse(error_payload(message, param=param), status_code=400)

    raw = await gw.read_body(request)
    if raw is None:
        return Response(gw.too_large, status_code=413, media_type="application/json")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return bad("We could not parse the JSON body of your request.")
    if not isinstance(payload, dict):
        return bad("The request body must be a JSON object.")
    trace_id, session_id = payload.get("trace_id"), payload.get("session_id")
    score, label, comment = payload.get("score"), payload.get("label"), payload.get("comment")
    if not (isinstance(trace_id, str) and trace_id) and not (isinstance(session_id, str) and session_id):
        return bad("Feedback needs a trace_id or a session_id (a non-empty string).", "trace_id")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        return bad("'score' must be a number.", "score")
    if label is not None and not isinstance(label, str):
        return bad("'label' must be a string.", "label")
    if comment is not None and not isinstance(comment, str):
        return bad("'comment' must be a string.", "comment")
    if score is None and label is None:
        return bad("Feedback needs a score or a label.", "score")
    if isinstance(trace_id, str) and trace_id:
        try:
            known = await run_in_threadpool(gw.known_trace, trace_id)
        except Exception as exc:
            log.warning("protege: feedback not stored (%s)", type(exc).__name__)
            return JSONResponse(error_payload(f"The trace store is unavailable ({type(exc).__name__}).",
                                              "server_error", code="store_unavailable"), status_code=503)
        if not known:
            return JSONResponse(error_payload(f"No trace with id '{trace_id}'.", param="trace_id",
                                              code="trace_not_found"), status_code=404)
    meta = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
    fb = Feedback(trace_id=trace_id or None, session_id=session_id or None,
                  score=float(score) if score is not None else None, label=label, comment=comment, meta=meta)
    try:
        await run_in_threadpool(gw.store.add_feedback, fb)
    except ValueError as exc:
        return bad(str(exc))
    except Exception as exc:
        # The class only: a driver's message quotes the bound values (the comment, ids).
        log.warning("protege: feedback not stored (%s)", type(exc).__name__)
        return JSONResponse(error_payload(f"The trace store is unavailable ({type(exc).__name__}).",
                                          "server_error", code="store_unavailable"), status_code=503)
    return JSONResponse({"id": fb.id, "object": "feedback", "trace_id": fb.trace_id,
                         "session_id": fb.session_id, "score": fb.score, "label": fb.label})

def ops_access(gw: Any, request: Request) -> tuple[Response | None, bool]:
    """(refusal, whether the caller holds a key) for /health and /metrics."""
    if not gw.keys.enabled:
        return None, True
    denied, _ = gw.check_key(request)
    if denied is None:
        return None, True
    return (None, False) if gw.config.open_metrics else (denied, False)

async def health(gw: Any, request: Request) -> Response:
    denied, trusted = ops_access(gw, request)
    if denied is not None:
        return denied
    writer = gw.writer
    stats = writer.stats if writer is not None else None
    store_ok = stats.store_ok if stats is not None else True
    lost = bool(stats and (stats.dropped or stats.build_errors))
    if not trusted:  # an open /health for a load balancer: the verdict only
        return JSONResponse({"status": "ok" if store_ok and not lost else "degraded"})
    return JSONResponse({
        # Degraded: the store is down (spooling), or some traces could not be kept.
        "status": "ok" if store_ok and not lost else "degraded",
        "teacher": gw.base,
        "upstream": gw.base,  # the former key, for monitors that read it
        "store": "ok" if store_ok else "down (spooling)",
        "capture": {
            "queue_depth": writer.queue_depth() if writer is not None else 0,
            "submitted": stats.submitted if stats else 0,
            "written": stats.written if stats else 0,
            "spooled": stats.spooled if stats else 0,
            "replayed": stats.replayed if stats else 0,
            "dropped": stats.dropped if stats else 0,
            "build_errors": stats.build_errors if stats else 0,
            "dead_lettered": stats.dead_lettered if stats else 0,
        },
    })

async def prometheus(gw: Any, request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    denied, _ = ops_access(gw, request)
    if denied is not None:
        return denied
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)
