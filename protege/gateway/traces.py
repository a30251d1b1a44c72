"""What the gateway writes down: the ids a request carries, checked at the
edge, and the trace builders the capture writer runs. They are plain functions
of picklable arguments because they run in the writer's thread or its child
process, and are journalled by reference (``protege.capture.journal``)."""

from __future__ import annotations

from typing import Any

import orjson

from protege.capture.extract import build_trace
from protege.capture.stream import StreamAccumulator
from protege.store.records import Trace


def _decoded(data: bytes, encoding: bytes | None) -> bytes:
    """The body as JSON bytes, for capture only (the client gets it as sent)."""
    if not encoding or encoding == b"identity":
        return data
    import zlib

    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if encoding == b"deflate":
        return zlib.decompress(data)
    raise ValueError(f"cannot decode a {encoding.decode()} body")


def _error_message(body: bytes) -> tuple[str, Any]:
    """The teacher's error message and its parsed body, for the trace."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        text = body[:4000].decode("utf-8", "replace")
        return text, text
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return str(parsed["error"].get("message") or parsed["error"]), parsed
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return parsed["error"], parsed
    return body[:4000].decode("utf-8", "replace"), parsed


# The fields the store keeps in columns; their values are checked at the edge.
ID_FIELDS = ("client_id", "session_id", "task", "protege_task")
ID_HEADERS = ("x-protege-task", "x-protege-client", "x-protege-session")
MAX_ID_CHARS = 512  # OpenAI's limit for a metadata value


def _json_type(value: Any) -> str:
    return {list: "an array", dict: "an object", bool: "a boolean", int: "an integer", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def id_problem(req: dict[str, Any], headers: dict[str, str | None]) -> tuple[str, str] | None:
    """Why the ids a request carries cannot be stored, as (message, param), or
    None. A list or an object where the store keeps a string is refused here
    rather than accepted and left to fail at insert time."""
    candidates: list[tuple[str, Any]] = [(h, v) for h, v in headers.items() if v is not None]
    meta = req.get("metadata")
    if isinstance(meta, dict):
        candidates += [(f"metadata.{k}", meta[k]) for k in ID_FIELDS if meta.get(k) is not None]
    elif meta is not None:
        return f"Invalid type for 'metadata': expected an object, but got {_json_type(meta)} instead.", "metadata"
    user = req.get("user")
    if user is not None:
        candidates.append(("user", user))
    for param, value in candidates:
        if not isinstance(value, str):
            return (f"Invalid type for '{param}': expected a string, but got {_json_type(value)} instead.",
                    param)
        if len(value) > MAX_ID_CHARS:
            return (f"Invalid '{param}': string too long. Expected a string with maximum length "
                    f"{MAX_ID_CHARS}, but got a string with length {len(value)} instead.", param)
        if "\x00" in value:
            return f"Invalid '{param}': the string contains a NUL character.", param
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _ids_from_body(req: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """client, session and task from OpenAI's ``user`` and ``metadata`` fields
    (strings only: anything else was refused at the edge, or is ignored)."""
    meta = req.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    client = _str(meta.get("client_id")) or _str(req.get("user"))
    session = _str(meta.get("session_id"))
    task = _str(meta.get("task")) or _str(meta.get("protege_task"))
    return client, session, task


# -- trace builders: run in the capture writer (a thread, or a child process,
# which is why they are plain functions of picklable arguments) ----------------
def _request_of(req: dict[str, Any] | bytes) -> dict[str, Any]:
    return orjson.loads(req) if isinstance(req, bytes) else req


def completion_trace(req: dict[str, Any] | bytes, data: bytes, status: int, trace_id: str, wall: float,
                     latency: float, client: str | None, session: str | None, task: str | None,
                     stream: bool, encoding: bytes | None = None, routing: dict[str, Any] | None = None) -> Trace:
    """The trace of a whole (non-streamed, or refused) answer. ``routing`` holds
    what the router decided (served_by, fallback_reason, task_id, adapter)."""
    request = _request_of(req)
    b_client, b_session, b_task = _ids_from_body(request)
    common: dict[str, Any] = dict(
        id=trace_id, created_at=wall, source="gateway", client_id=client or b_client,
        session_id=session or b_session, task_tag=task or b_task, http_status=status,
        latency_ms=latency * 1000, stream=stream, **(routing or {}),
    )
    try:
        data = _decoded(data, encoding)
    except (ValueError, OSError) as exc:
        return build_trace(request, None, status="error", error=f"undecodable teacher body: {exc}", **common)
    if 200 <= status < 300:
        try:
            response = orjson.loads(data)
        except orjson.JSONDecodeError:
            response = None
        if isinstance(response, dict) and isinstance(response.get("choices"), list):
            return build_trace(request, response, **common)
        return build_trace(request, None, status="error", error="the teacher's answer is not a chat.completion",
                           # meta.upstream_body: the key stored traces already have.
                           meta={"upstream_body": data[:65536].decode("utf-8", "replace")}, **common)
    message, parsed = _error_message(data)
    return build_trace(request, None, status="error", error=f"teacher {status}: {message}",
                       meta={"upstream_body": parsed}, **common)


def stream_trace(req: dict[str, Any] | bytes, parts: list[bytes], error: str | None, trace_id: str, wall: float,
                 latency: float, ttft: float | None, client: str | None, session: str | None, task: str | None,
                 encoding: bytes | None = None, routing: dict[str, Any] | None = None) -> Trace:
    """The trace of a streamed answer: SSE chunks reassembled into one chat.completion."""
    request = _request_of(req)
    acc = StreamAccumulator()
    try:
        acc.feed_sse_bytes(_decoded(b"".join(parts), encoding))
    except (ValueError, OSError) as exc:
        acc.error = {"message": f"undecodable teacher stream: {exc}"}
    response = acc.result() if acc.chunks else None
    err = error
    if err is None and acc.error is not None:
        err = str(acc.error.get("message") or acc.error)
    b_client, b_session, b_task = _ids_from_body(request)
    meta: dict[str, Any] = {}
    if acc.error is not None:
        meta["stream_error"] = acc.error
    return build_trace(
        request, response, id=trace_id, created_at=wall, source="gateway",
        client_id=client or b_client, session_id=session or b_session, task_tag=task or b_task,
        status="error" if err else "ok", error=err, http_status=200,
        latency_ms=latency * 1000, ttft_ms=ttft * 1000 if ttft is not None else None,
        stream=True, meta=meta, **(routing or {}),
    )


def failure_trace(req: dict[str, Any], trace_id: str, wall: float, latency: float, status: int, error: str,
                  client: str | None, session: str | None, task: str | None, stream: bool,
                  routing: dict[str, Any] | None = None) -> Trace:
    """A call the teacher never answered (invalid request, timeout, no connection)."""
    b_client, b_session, b_task = _ids_from_body(req)
    return build_trace(
        req, None, id=trace_id, created_at=wall, source="gateway", client_id=client or b_client,
        session_id=session or b_session, task_tag=task or b_task, status="error", error=error,
        http_status=status, latency_ms=latency * 1000, stream=stream, **(routing or {}),
    )


def student_trace(req: dict[str, Any] | bytes, completion: dict[str, Any], trace_id: str, wall: float,
                  latency: float, client: str | None, session: str | None, task: str | None, stream: bool,
                  routing: dict[str, Any]) -> Trace:
    """The trace of an answer a student served (already validated)."""
    request = _request_of(req)
    b_client, b_session, b_task = _ids_from_body(request)
    return build_trace(
        request, completion, id=trace_id, created_at=wall, source="gateway", client_id=client or b_client,
        session_id=session or b_session, task_tag=task or b_task, http_status=200,
        latency_ms=latency * 1000, ttft_ms=latency * 1000 if stream else None, stream=stream, **routing,
    )
