"""The OpenAI-compatible capture gateway (ASGI).

``POST /v1/chat/completions`` is served by a raw ASGI handler: it reads the
body, checks it is a JSON object with ``model`` and ``messages``, forwards the
client's bytes verbatim to the teacher, relays the answer (streamed chunk by
chunk for SSE), and hands a closure to the ``CaptureWriter``. Parsing the
answer, reassembling streams, pricing and storing all happen in the writer
thread, so the store never delays a response. Everything else (models,
feedback, health, metrics, other ``/v1`` paths) goes through Starlette.

The chat path is one class on purpose, read top to bottom: validation, the
student's turn, the teacher, the stream relay, capture. The other endpoints
live in ``ops.py`` and ``ui.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from protege.capture.writer import CaptureWriter
from protege.gateway import ops
from protege.gateway.config import GatewayConfig
from protege.gateway.errors import JSON_HEADERS, error_body, error_payload, sse_error_event
from protege.gateway.keys import KeyRing
from protege.gateway.metrics import GatewayMetrics
from protege.gateway.storage import LazyStore, load_redact
from protege.gateway.teacher_http import (
    HOP_BY_HOP,
    TeacherConnectError,
    TeacherHttpError,
    make_teacher_client,
)
from protege.gateway.traces import (
    ID_HEADERS,
    _ids_from_body,
    _str,
    id_problem,
)

# Journals written before the trace builders moved to gateway/traces.py name
# them here; they stay importable from this module for those.
from protege.gateway.traces import completion_trace as completion_trace
from protege.gateway.traces import failure_trace as failure_trace
from protege.gateway.traces import stream_trace as stream_trace
from protege.gateway.traces import student_trace as student_trace
from protege.gateway.ui import LazyUI
from protege.ids import new_id

if TYPE_CHECKING:
    from protege.store.db import TraceStore

log = logging.getLogger("protege.gateway")


class _Done:
    """An awaitable that is already done (no journal wait): cheaper than a coroutine."""

    def __await__(self) -> Any:
        return iter(())


_DONE = _Done()

_perf = time.perf_counter
_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
# Client headers not forwarded to the teacher (besides hop-by-hop ones).
_DROP_REQUEST_HEADERS = HOP_BY_HOP | {"accept-encoding", "authorization", "x-protege-key", "content-type"}


async def _wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Gateway:
    """The ASGI app ``create_app`` returns. Attributes worth knowing:
    ``writer`` (CaptureWriter, after startup), ``metrics``, ``config``."""

    def __init__(self, config: GatewayConfig, *, store: TraceStore | LazyStore | None = None, transport: Any = None,
                 students: Any = None) -> None:
        self.config = config
        # StudentPath (protege.gateway.student): routes calls to promoted students.
        self.students = students
        self.owns_store = store is None
        self.store = store if store is not None else LazyStore(config.db_url)
        self.transport = transport
        self.redact = load_redact(config.redact)
        self.keys = KeyRing(config.gateway_keys, config.keys_file)
        self.metrics = GatewayMetrics()
        self.metrics.watch_writer(lambda: self.writer)
        self.base = config.teacher_base
        self.chat_url = self.base + "/chat/completions"
        self.teacher_auth: str | None = None
        if config.teacher_key_env:
            key = os.environ.get(config.teacher_key_env)
            if not key:
                raise ValueError(f"--teacher-key-env: environment variable {config.teacher_key_env} is not set")
            self.teacher_auth = f"Bearer {key}"
        self.teacher_http: Any = None
        self.writer: CaptureWriter | None = None
        self.journal: Any = None
        self.ship_bytes = bool(config.capture_process and self.owns_store)
        self.max_body = config.max_body_bytes
        self.too_large = error_body(
            f"Request too large: the body is over the gateway's limit of {config.max_body_bytes:,} bytes.",
            "invalid_request_error", code="request_too_large")
        # Trace ids handed out lately: feedback may arrive before the writer has stored its trace.
        self._recent: collections.deque[str] = collections.deque(maxlen=200_000)
        self._recent_set: set[str] = set()
        self.started = False
        self._starlette = Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
                Route("/v1/feedback", self.feedback, methods=["POST"]),
                Route("/feedback", self.feedback, methods=["POST"]),
                Route("/v1/{path:path}", self.passthrough, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
                Mount("/ui", app=LazyUI(self)),
            ],
            lifespan=self._lifespan,
        )

    # -- lifecycle --------------------------------------------------------
    async def startup(self) -> None:
        if self.started:
            return
        cfg = self.config
        self.teacher_http = make_teacher_client(
            cfg.client, timeout_s=cfg.timeout_s, connect_timeout_s=cfg.connect_timeout_s,
            max_connections=cfg.max_connections, transport=self.transport,
        )
        self.writer = None
        if self.ship_bytes:
            from protege.gateway.capture_proc import ProcessCaptureWriter

            try:
                self.writer = ProcessCaptureWriter(cfg.db_url, cfg.capture, redact=cfg.redact)  # type: ignore[assignment]
            except Exception as exc:  # e.g. spawn from an unguarded __main__ script
                log.warning("protege: capture process unavailable (%s); capturing in a thread", exc)
                self.ship_bytes = False
        if self.writer is None:
            self.writer = CaptureWriter(self.store, cfg.capture, redact=self.redact)
        self.journal = None
        if cfg.durability != "off":
            from protege.capture.journal import Journal
            from protege.capture.spool import spool_path_for

            spool = cfg.capture.spool_path or spool_path_for(getattr(self.store, "url", None) or cfg.db_url)
            self.journal = Journal(Path(spool).with_suffix(".journal"), mode=cfg.durability,
                                   fsync_interval_s=cfg.fsync_interval_s, barrier=self.writer.barrier)
            if hasattr(self.writer, "on_child_lost"):
                loop = asyncio.get_running_loop()
                self.writer.on_child_lost = lambda: loop.call_soon_threadsafe(self._reclaim)  # type: ignore[union-attr]
            items, forget = self.journal.recover()
            for item in items:
                self.writer.submit(item)
            if items:
                self.writer.barrier(forget)
            else:
                forget()
        if self.students is None and cfg.students:
            # Loading a model takes seconds: off the event loop.
            from protege.gateway.student import build_student_path

            self.students = await run_in_threadpool(build_student_path, cfg, self.store)
        self.started = True

    async def shutdown(self) -> None:
        if not self.started:
            return
        self.started = False
        with contextlib.suppress(Exception):
            await self.teacher_http.aclose()
        if self.students is not None:
            with contextlib.suppress(Exception):
                self.students.close()
        writer = self.writer
        if writer is not None:
            flushed = await run_in_threadpool(writer.flush)
            # Flushes the queue and replays the spool one last time.
            await run_in_threadpool(writer.close)
            if self.journal is not None:
                # Kept when the writer could not flush: the next start replays it.
                self.journal.close(delete=flushed)
        if self.owns_store:
            with contextlib.suppress(Exception):
                self.store.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    # -- ASGI entry -------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in _CHAT_PATHS and scope["method"] == "POST":
            if not self.started:
                await self.startup()
            await self.chat(scope, receive, send)
            return
        await self._starlette(scope, receive, send)

    def _reclaim(self) -> None:
        """The capture child died: feed what this gateway journaled to the
        in-process writer that took over (ids already stored are skipped)."""
        if self.journal is None or self.writer is None:
            return
        items, forget = self.journal.reclaim()
        for item in items:
            self.writer.submit(item)
        self.writer.barrier(forget)
        log.warning("protege: %d journaled captures handed to the in-process writer", len(items))

    def _remember(self, trace_id: str) -> None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            self._recent_set.discard(recent[0])
        recent.append(trace_id)
        self._recent_set.add(trace_id)

    def known_trace(self, trace_id: str) -> bool:
        if trace_id in self._recent_set:
            return True
        has = getattr(self.store, "has_trace", None)
        return has(trace_id) if has is not None else True

    async def read_body(self, request: Request) -> bytes | None:
        """The body, or None when it is over the limit (read no further)."""
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return None
            parts.append(chunk)
        return b"".join(parts)

    def _capture(self, item: Any) -> Any:
        """Journal ``item`` (before the answer goes out) and hand it to the
        writer; await the result: in fsync mode it waits for the group fsync."""
        durable = None
        if self.journal is not None:
            try:
                durable = self.journal.append(item)
            except Exception as exc:  # e.g. a request nested past pickle's reach, or a full disk
                self.journal.errors += 1
                log.error("protege: capture not journaled (%s); it is queued only", type(exc).__name__)
        self.writer.submit(item)  # type: ignore[union-attr]
        return durable if durable is not None else _DONE

    def _req_arg(self, req: dict[str, Any], body: bytes) -> dict[str, Any] | bytes:
        # A child process gets the client's bytes (cheaper to send than the
        # parsed dict); the writer thread gets the dict already parsed.
        return body if self.ship_bytes else req

    # -- auth -------------------------------------------------------------
    def _authorize(self, client_auth: bytes | None, protege_key: bytes | None) -> tuple[bool, str | None, bool]:
        """(allowed, key name, whether Authorization carried the gateway key)."""
        if not self.keys.enabled:
            return True, None, False
        if protege_key:
            name = self.keys.check(protege_key.decode("latin-1"))
            return name is not None, name, False
        if client_auth and client_auth[:7].lower() == b"bearer ":
            name = self.keys.check(client_auth[7:].decode("latin-1").strip())
            return name is not None, name, name is not None
        return False, None, False

    # -- the hot path -----------------------------------------------------
    async def chat(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        t0 = _perf()
        wall = time.time()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                # Not read further, not forwarded, not stored.
                await self._send_json(send, 413, self.too_large, None)
                self.metrics.observe(413, "gateway", "chat", False, _perf() - t0)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

        fwd: dict[str, str] = {}
        client_auth = protege_key = None
        task = client = session = None
        for k, v in scope["headers"]:
            if k.startswith(b"x-protege-"):
                if k == b"x-protege-task":
                    task = v.decode("latin-1")
                elif k == b"x-protege-client":
                    client = v.decode("latin-1")
                elif k == b"x-protege-session":
                    session = v.decode("latin-1")
                elif k == b"x-protege-key":
                    protege_key = v
                continue
            if k == b"authorization":
                client_auth = v
                continue
            name = k.decode("latin-1")
            if name not in _DROP_REQUEST_HEADERS:
                fwd[name] = v.decode("latin-1")

        allowed, key_name, auth_is_gateway_key = self._authorize(client_auth, protege_key)
        if not allowed:
            await self._send_json(send, 401, error_body(
                "A valid gateway API key is required (X-Protege-Key or Authorization: Bearer).",
                "invalid_request_error", code="invalid_api_key"), None)
            self.metrics.observe(401, "gateway", "chat", False, _perf() - t0)
            return

        trace_id = new_id()
        self._remember(trace_id)
        # Malformed or invalid input: answer 400 without calling the teacher.
        problem = None
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            req, problem = None, ("We could not parse the JSON body of your request.", None)
        if problem is None:
            if not isinstance(req, dict):
                problem = ("The request body must be a JSON object.", None)
            elif not isinstance(req.get("model"), str) or not req["model"]:
                problem = ("You must provide a model parameter.", "model")
            elif not isinstance(req.get("messages"), list):
                problem = ("'messages' is a required property and must be an array.", "messages")
            elif "stream" in req and not isinstance(req["stream"], bool | None):
                problem = ("'stream' must be a boolean.", "stream")
            else:
                problem = id_problem(req, {"x-protege-task": task, "x-protege-client": client,
                                           "x-protege-session": session})
        if problem is not None:
            msg, param = problem
            latency = _perf() - t0
            bad = req if isinstance(req, dict) else {"raw": body[:65536].decode("utf-8", "replace")}
            # The refused request is kept (for the record) without the ids that made it fail.
            await self._capture(partial(
                failure_trace, bad, trace_id, wall, latency, 400, f"invalid request: {msg}",
                key_name if param in ID_HEADERS else _str(client) or key_name,
                None if param in ID_HEADERS else session, None if param in ID_HEADERS else task, False))
            await self._send_json(send, 400, error_body(msg, "invalid_request_error", param=param), trace_id)
            self.metrics.observe(400, "gateway", "chat", False, latency)
            return

        assert isinstance(req, dict)
        fwd["content-type"] = "application/json"
        fwd["accept-encoding"] = "identity"
        if self.teacher_auth is not None:
            fwd["authorization"] = self.teacher_auth
        elif client_auth is not None and not auth_is_gateway_key:
            fwd["authorization"] = client_auth.decode("latin-1")
        client = client or key_name
        stream = req.get("stream") is True

        routing: dict[str, Any] | None = None
        decision = None
        if self.students is not None:
            decision = self.students.decide(req, tag=task or _ids_from_body(req)[2], key=session or trace_id)
            self.metrics.decision_time.observe(decision.decision_us / 1e6)
            self.metrics.decisions.labels(decision.target, decision.reason).inc()
            routing = {"task_id": decision.task_id} if decision.task_id else None
            if decision.target == "student":
                reason = await self._serve_student(send, req, body, decision, trace_id, wall, t0, client,
                                                   session, task, stream)
                if reason is None:
                    return
                self.metrics.fallbacks.labels(reason.split(":", 1)[0]).inc()
                routing = {"task_id": decision.task_id, "served_by": "fallback", "adapter": decision.adapter,
                           "fallback_reason": reason}
        served_by = (routing or {}).get("served_by", "teacher")

        try:
            qs = scope.get("query_string")
            url = self.chat_url + "?" + qs.decode("latin-1") if qs else self.chat_url  # e.g. ?api-version=
            resp = await self.teacher_http.request("POST", url, fwd, body)
        except TeacherHttpError as exc:
            await self._teacher_failed(send, exc, req, trace_id, wall, t0, client, session, task, stream, routing)
            return

        if not stream or resp.status != 200 or not resp.content_type.startswith(b"text/event-stream"):
            # A stream request refused up front gets the teacher's JSON error as is (and a
            # teacher that ignores stream=true, its whole JSON answer).
            try:
                data = await resp.read()
            except TeacherHttpError as exc:
                await self._teacher_failed(send, exc, req, trace_id, wall, t0, client, session, task, stream,
                                            routing)
                return
            status = resp.status
            headers = resp.headers
            headers.append((b"x-protege-trace-id", trace_id.encode()))
            headers.append((b"x-protege-served-by", served_by.encode()))
            headers.append((b"content-length", str(len(data)).encode()))
            latency = _perf() - t0
            # Journaled before the client has its answer: an acknowledged call is never lost.
            await self._capture(partial(
                completion_trace, self._req_arg(req, body), data, status, trace_id, wall, latency,
                client, session, task, stream, resp.content_encoding, routing))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data, "more_body": False})
            self.metrics.observe(status, served_by, "chat", stream, latency)
            if decision is not None and decision.shadow and status == 200 and resp.content_encoding is None:
                self.students.shadow(req, decision, data, trace_id)  # type: ignore[union-attr]
            return

        await self._relay_stream(send, receive, resp, req, body, trace_id, wall, t0, client, session, task,
                                 routing, decision)

    async def _relay_stream(self, send: Any, receive: Any, resp: Any, req: dict[str, Any], body: bytes, trace_id: str,
                            wall: float, t0: float, client: str | None, session: str | None,
                            task: str | None, routing: dict[str, Any] | None = None, decision: Any = None) -> None:
        headers = resp.headers
        encoding = resp.content_encoding
        served_by = (routing or {}).get("served_by", "teacher")
        headers.append((b"x-protege-trace-id", trace_id.encode()))
        headers.append((b"x-protege-served-by", served_by.encode()))
        headers.append((b"cache-control", b"no-cache"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        parts: list[bytes] = []
        ttft: float | None = None
        error: str | None = None
        gone = False
        finished = False  # the client already has the last event and the end of the body
        latency: float | None = None  # set when the trace is captured
        # A client that hangs up must stop the teacher's generation too (it is paying for it).
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            async for chunk in resp.chunks():
                if not chunk:
                    continue
                parts.append(chunk)
                if finished:
                    continue  # after [DONE]: read to the end only so the connection is reused
                if ttft is None:
                    ttft = _perf() - t0
                if watcher.done():
                    gone = True
                    error = "client disconnected before the end of the stream"
                    break
                if chunk.endswith(b"data: [DONE]\n\n") and encoding is None:
                    # The last event and the end of the body in one write, once the trace is journaled.
                    finished = True
                    latency = _perf() - t0
                    await self._capture(partial(
                        stream_trace, self._req_arg(req, body), list(parts), None, trace_id, wall, latency, ttft,
                        client, session, task, encoding, routing))
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                else:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except TeacherHttpError as exc:
            if not finished:
                error = str(exc)
        except Exception as exc:  # anything else still must not look like a clean end
            if not finished:
                error = f"stream relay failed: {exc!r}"
        finally:
            watcher.cancel()
            with contextlib.suppress(Exception):
                await resp.close()
        if gone:
            self.metrics.teacher_errors.labels("client_gone").inc()
        elif error is None and not finished and (encoding is None or encoding == b"identity"):
            tail = (parts[-2][-16:] if len(parts) > 1 else b"") + (parts[-1] if parts else b"")
            if b"[DONE]" not in tail:
                error = "the teacher's stream ended before [DONE]"
        if latency is None:
            latency = _perf() - t0
            await self._capture(partial(
                stream_trace, self._req_arg(req, body), parts, error, trace_id, wall, latency, ttft,
                client, session, task, encoding, routing))
        if error is not None and not gone:
            self.metrics.teacher_errors.labels("stream_broken").inc()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "more_body": False,
                            "body": sse_error_event(error, "server_error", code="upstream_stream_error")})
        elif not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # 499: the client closed the request (nginx's convention).
        self.metrics.observe(200 if error is None else 499 if gone else 502, served_by, "chat", True, latency)
        if ttft is not None:
            self.metrics.ttft.observe(ttft)
        if decision is not None and decision.shadow and error is None and encoding is None:
            self.students.shadow(req, decision, b"".join(parts), trace_id, streamed=True)  # type: ignore[union-attr]

    async def _teacher_failed(self, send: Any, exc: TeacherHttpError, req: dict[str, Any], trace_id: str,
                               wall: float, t0: float, client: str | None, session: str | None,
                               task: str | None, stream: bool, routing: dict[str, Any] | None = None) -> None:
        kind = "timeout" if exc.status == 504 else "connect" if isinstance(exc, TeacherConnectError) else "broken"
        self.metrics.teacher_errors.labels(kind).inc()
        latency = _perf() - t0
        await self._capture(partial(
            failure_trace, req, trace_id, wall, latency, exc.status, str(exc), client, session, task, stream,
            routing))
        await self._send_json(send, exc.status, error_body(str(exc), "upstream_error", code=exc.code), trace_id)
        self.metrics.observe(exc.status, (routing or {}).get("served_by", "teacher"), "chat", stream, latency)

    async def _serve_student(self, send: Any, req: dict[str, Any], body: bytes, decision: Any, trace_id: str,
                             wall: float, t0: float, client: str | None, session: str | None, task: str | None,
                             stream: bool) -> str | None:
        """Answer with the student when its answer validates; else return why not
        (nothing has been sent then, so the teacher can answer transparently)."""
        from protege.gateway.student import student_completion
        from protege.router.sse import completion_to_sse

        students = self.students
        answer, reasons = await students.answer(req, decision)  # type: ignore[union-attr]
        if answer is not None:
            self.metrics.student_latency.observe(answer.latency_ms / 1000)
        if reasons:
            return ";".join(reasons)[:500]
        assert answer is not None
        completion = student_completion(answer, adapter=decision.adapter, completion_id="chatcmpl-" + trace_id)
        extra = [(b"x-protege-trace-id", trace_id.encode()), (b"x-protege-served-by", b"student")]
        if stream:
            include = bool((req.get("stream_options") or {}).get("include_usage"))
            payload = b"".join(completion_to_sse(completion, include_usage=include))
            headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"), *extra]
        else:
            payload = orjson.dumps(completion)
            headers = [*JSON_HEADERS, *extra]
        headers.append((b"content-length", str(len(payload)).encode()))
        latency = _perf() - t0
        routing = {"served_by": "student", "adapter": decision.adapter, "task_id": decision.task_id,
                   "meta": {"router": {"reason": decision.reason, "decision_us": round(decision.decision_us, 1)}}}
        await self._capture(partial(
            student_trace, self._req_arg(req, body), completion, trace_id, wall, latency, client, session,
            task, stream, routing))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        self.metrics.observe(200, "student", "chat", stream, latency)
        self.metrics.tokens.labels("student", "completion").inc(answer.completion_tokens)
        return None

    @staticmethod
    async def _send_json(send: Any, status: int, body: bytes, trace_id: str | None) -> None:
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        if trace_id:
            headers.append((b"x-protege-trace-id", trace_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # -- other endpoints --------------------------------------------------
    def check_key(self, request: Request) -> tuple[Response | None, bool]:
        allowed, _name, auth_is_key = self._authorize(
            request.headers.get("authorization", "").encode("latin-1") or None,
            request.headers.get("x-protege-key", "").encode("latin-1") or None,
        )
        if allowed:
            return None, auth_is_key
        return JSONResponse(error_payload("A valid gateway API key is required.", code="invalid_api_key"),
                            status_code=401), auth_is_key

    async def passthrough(self, request: Request) -> Response:
        """Other ``/v1`` endpoints (models, embeddings, ...) are relayed, not captured."""
        denied, auth_is_key = self.check_key(request)
        if denied is not None:
            return denied
        headers = {k: v for k, v in request.headers.items()
                   if k not in _DROP_REQUEST_HEADERS and not k.startswith("x-protege-")}
        headers["accept-encoding"] = "identity"
        if request.headers.get("content-type"):
            headers["content-type"] = request.headers["content-type"]
        if self.teacher_auth is not None:
            headers["authorization"] = self.teacher_auth
        elif "authorization" in request.headers and not auth_is_key:
            headers["authorization"] = request.headers["authorization"]
        url = self.base + "/" + request.path_params["path"]
        if request.url.query:
            url += "?" + request.url.query
        body = await request.body()
        try:
            resp = await self.teacher_http.request(request.method, url, headers, body or None)
            data = await resp.read()
        except TeacherHttpError as exc:
            return Response(error_body(str(exc), "upstream_error", code=exc.code), status_code=exc.status,
                            media_type="application/json")
        self.metrics.observe(resp.status, "teacher", "passthrough", False, 0.0)
        return Response(data, status_code=resp.status,
                        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in resp.headers})

    async def feedback(self, request: Request) -> Response:
        return await ops.feedback(self, request)

    async def health(self, request: Request) -> Response:
        return await ops.health(self, request)

    async def prometheus(self, request: Request) -> Response:
        return await ops.prometheus(self, request)


def create_app(config: GatewayConfig | None = None, *, store: TraceStore | LazyStore | None = None, transport: Any = None,
               students: Any = None) -> Gateway:
    """The gateway as an ASGI app. ``store``: a TraceStore (or anything with
    ``add_traces``/``add_feedback``); default opens ``config.db_url`` lazily.
    ``transport``: an httpx transport standing in for the network (tests)."""
    return Gateway(config or GatewayConfig(), store=store, transport=transport, students=students)

