"""One call captured through a wrapped ``openai`` client (``protege.wrap``):
the request snapshot, the answer or the stream it returns, and the ``Trace``
built from them in the writer thread."""

from __future__ import annotations

import time
from typing import Any

from protege.capture.extract import build_trace
from protege.capture.stream import StreamAccumulator
from protege.ids import new_id
from protege.safejson import json_loads
from protege.store.records import Trace

TASK_HEADER = "x-protege-task"
SESSION_HEADER = "x-protege-session"
CLIENT_HEADER = "x-protege-client"
# Attribute set on every returned object (response, stream, raw response): the
# id of the trace that records the call. Named like openai's own ``_request_id``
# so it never shows up in ``model_dump()``/``to_dict()``.
TRACE_ID_ATTR = "_protege_trace_id"

RAW_HEADER = "X-Stainless-Raw-Response"  # openai._constants.RAW_RESPONSE_HEADER
REQUEST_ONLY_KWARGS = ("extra_headers", "extra_query", "extra_body", "timeout")


# -- request snapshot / JSON ---------------------------------------------------
def is_sentinel(value: Any) -> bool:
    import openai

    return isinstance(value, openai.NotGiven | openai.Omit)


def _jsonable(value: Any) -> Any:
    """What the SDK would send: pydantic models dumped, sentinels dropped."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not is_sentinel(v)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, type):
        # ``parse(response_format=SomeModel)``: record the JSON schema it sends.
        try:
            from openai.lib._parsing._completions import type_to_response_format_param

            return _jsonable(type_to_response_format_param(value))
        except Exception:
            return value.__name__
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return _jsonable(dump(mode="json", exclude_unset=True, by_alias=True))
        except TypeError:
            return _jsonable(dump())
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return [_jsonable(v) for v in value]
    except TypeError:
        return str(value)


def header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == name and value is not None and not is_sentinel(value):
            return str(value)
    return None


def snapshot(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request body as of now. Lists are copied (callers mutate them after
    the call); turning objects into JSON waits for the writer thread."""
    body: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in REQUEST_ONLY_KWARGS or is_sentinel(value):
            continue
        body[key] = list(value) if isinstance(value, list | tuple) else value
    extra = kwargs.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    return body


# -- one captured call -----------------------------------------------------------
class Call:
    """Everything known about one call, turned into a ``Trace`` off-thread."""

    def __init__(self, capture: Any, kwargs: dict[str, Any]) -> None:
        self.capture = capture
        self.id = new_id()
        self.created_at = time.time()
        self.t0 = time.perf_counter()
        headers = kwargs.get("extra_headers")
        self.request = snapshot(kwargs)
        # Same precedence as the gateway: header, then OpenAI's ``metadata`` /
        # ``user`` body fields, then the wrapper's defaults.
        meta = self.request.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        user = self.request.get("user")
        self.task = header(headers, TASK_HEADER) or meta.get("task") or meta.get("protege_task") or capture.task
        self.session_id = header(headers, SESSION_HEADER) or meta.get("session_id") or capture.session_id
        self.client_id = (
            header(headers, CLIENT_HEADER) or meta.get("client_id") or (user if isinstance(user, str) else None)
            or capture.client_id
        )
        self.raw_body: bytes | None = None
        self.parsed: Any = None
        self.chunks: list[Any] | None = None
        self.ttft_ms: float | None = None
        self.latency_ms: float | None = None
        self.http_status: int | None = None
        self.status = "ok"
        self.error: str | None = None
        self.meta: dict[str, Any] = {}
        self._done = False

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000.0

    # -- outcomes
    def completed(self, raw: Any, parsed: Any) -> None:
        self.latency_ms = self._elapsed_ms()
        http = getattr(raw, "http_response", None)
        if http is not None:
            self.http_status = http.status_code
            try:
                self.raw_body = http.content
            except Exception:  # body not read: fall back to the parsed object
                self.raw_body = None
        self.parsed = parsed
        self._submit()

    def failed(self, exc: BaseException, raw: Any = None) -> None:
        if self._done:
            return
        self.latency_ms = self._elapsed_ms()
        http = getattr(raw, "http_response", None)
        if http is not None and self.chunks is None:
            # The teacher answered but the SDK could not parse it: keep the answer.
            self.http_status = http.status_code
            try:
                self.raw_body = http.content
            except Exception:
                pass
        self.status = "error"
        status = getattr(exc, "status_code", None)
        self.http_status = status if isinstance(status, int) else self.http_status
        self.error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        body = getattr(exc, "body", None)
        self.meta["error"] = {"type": type(exc).__name__, "body": body}
        self._submit()

    def stream_started(self, raw: Any) -> None:
        http = getattr(raw, "http_response", None)
        if http is not None:
            self.http_status = http.status_code
        self.chunks = []

    def chunk(self, chunk: Any) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = self._elapsed_ms()
        assert self.chunks is not None
        self.chunks.append(chunk)

    def stream_ended(self) -> None:
        if self._done:
            return
        self.latency_ms = self._elapsed_ms()
        self._submit()

    def stream_closed(self) -> None:
        """The caller stopped reading before the stream ended. The answer is
        complete only if every choice already got its finish_reason."""
        if self._done:
            return
        self.latency_ms = self._elapsed_ms()
        self.meta["closed_early"] = True
        if not self._all_choices_finished():
            self.status = "error"
            self.error = "stream closed by the caller before it ended"
        self._submit()

    def _all_choices_finished(self) -> bool:
        seen: dict[int, bool] = {}
        for c in self.chunks or []:
            for ch in getattr(c, "choices", None) or []:
                seen.setdefault(ch.index, False)
                if ch.finish_reason:
                    seen[ch.index] = True
        return bool(seen) and all(seen.values())

    def _submit(self) -> None:
        self._done = True
        self.capture.writer.submit(self.build)

    # -- writer thread
    def _response(self) -> dict[str, Any] | None:
        if self.chunks is not None:
            if not self.chunks:
                return None
            acc = StreamAccumulator()
            for c in self.chunks:
                acc.feed(c.to_dict() if hasattr(c, "to_dict") else _jsonable(c))
            return acc.result()
        if self.raw_body:
            try:
                value = json_loads(self.raw_body)
                if isinstance(value, dict):
                    return value
            except ValueError:
                pass
        if self.parsed is not None:
            return _jsonable(self.parsed)
        return None

    def build(self) -> Trace:
        return build_trace(
            _jsonable(self.request),
            self._response(),
            id=self.id,
            created_at=self.created_at,
            source="sdk",
            client_id=self.client_id,
            session_id=self.session_id,
            task_tag=self.task,
            status=self.status,
            http_status=self.http_status,
            error=self.error,
            latency_ms=self.latency_ms,
            ttft_ms=self.ttft_ms,
            meta=self.meta or None,
        )


def mark(obj: Any, trace_id: str) -> None:
    try:
        setattr(obj, TRACE_ID_ATTR, trace_id)
    except Exception:  # a frozen or slotted object: the id is on the client instead
        pass


def trace_id_of(obj: Any) -> str | None:
    """The trace id recorded for a response, stream or raw response returned by
    a wrapped client (``None`` for anything else)."""
    return getattr(obj, TRACE_ID_ATTR, None)


# -- streams -------------------------------------------------------------------
def tap_stream(stream: Any, call: Call) -> None:
    """Let chunks pass through unchanged while keeping them for the trace.
    The SDK's ``Stream`` reads ``self._iterator`` and ``__exit__`` calls
    ``self.close()``; both are swapped on this instance only."""
    inner = stream._iterator

    def tapped() -> Any:
        try:
            for chunk in inner:
                call.chunk(chunk)
                yield chunk
        except GeneratorExit:
            call.stream_closed()
            raise
        except Exception as exc:
            call.failed(exc)
            raise
        call.stream_ended()

    original_close = stream.close

    def close() -> None:
        try:
            original_close()
        finally:
            call.stream_closed()

    stream._iterator = tapped()
    stream.close = close
    mark(stream, call.id)


def tap_async_stream(stream: Any, call: Call) -> None:
    import asyncio

    inner = stream._iterator

    async def tapped() -> Any:
        try:
            async for chunk in inner:
                call.chunk(chunk)
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):
            call.stream_closed()
            raise
        except Exception as exc:
            call.failed(exc)
            raise
        call.stream_ended()

    original_close = stream.close

    async def close() -> None:
        try:
            await original_close()
        finally:
            call.stream_closed()

    stream._iterator = tapped()
    stream.close = close
    mark(stream, call.id)
