"""In-process capture: ``protege.wrap(client)`` around the official ``openai`` client.

The wrapped client is the same object, so ``isinstance`` checks and every other
resource keep working; only ``chat.completions.create`` and ``.parse`` (and their
``with_raw_response`` twins) are replaced by versions that record each call.

Why the calls go through the SDK's raw-response path: it hands us the HTTP
response, so the stored ``response`` is the upstream JSON byte for byte instead
of a re-serialised pydantic model. The caller still gets exactly what the plain
call returns (``LegacyAPIResponse.parse()`` is what the SDK itself returns for
``with_raw_response``).

Nothing heavy happens on the caller's path: the request is snapshotted (a
shallow copy, since agents append to their ``messages`` list right after a
call), stream chunks are kept as the SDK's own objects, and the JSON decoding,
stream reassembly, cost lookup and database write run in the
``CaptureWriter`` thread.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from protege.capture.extract import build_trace
from protege.capture.stream import StreamAccumulator
from protege.capture.writer import CaptureWriter, WriterConfig
from protege.ids import new_id
from protege.safejson import json_loads
from protege.store.records import Feedback, Trace

log = logging.getLogger("protege.capture")

TASK_HEADER = "x-protege-task"
SESSION_HEADER = "x-protege-session"
CLIENT_HEADER = "x-protege-client"
# Attribute set on every returned object (response, stream, raw response): the
# id of the trace that records the call. Named like openai's own ``_request_id``
# so it never shows up in ``model_dump()``/``to_dict()``.
TRACE_ID_ATTR = "_protege_trace_id"

_RAW_HEADER = "X-Stainless-Raw-Response"  # openai._constants.RAW_RESPONSE_HEADER
_REQUEST_ONLY_KWARGS = ("extra_headers", "extra_query", "extra_body", "timeout")

_lock = threading.Lock()
# One writer (one thread, one batch stream) per store, shared by the clients
# wrapped around it; a client with its own ``redact`` gets its own writer.
_shared_writers: dict[int, tuple[Any, CaptureWriter]] = {}
_all_writers: set[CaptureWriter] = set()
_writer_seq = itertools.count()
_stores: dict[str, Any] = {}  # url -> store opened by wrap()/feedback()
_last_capture: Capture | None = None


# -- request snapshot / JSON ---------------------------------------------------
def _is_sentinel(value: Any) -> bool:
    import openai

    return isinstance(value, openai.NotGiven | openai.Omit)


def _jsonable(value: Any) -> Any:
    """What the SDK would send: pydantic models dumped, sentinels dropped."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not _is_sentinel(v)}
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


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == name and value is not None and not _is_sentinel(value):
            return str(value)
    return None


def _snapshot(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request body as of now. Lists are copied (callers mutate them after
    the call); turning objects into JSON waits for the writer thread."""
    body: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _REQUEST_ONLY_KWARGS or _is_sentinel(value):
            continue
        body[key] = list(value) if isinstance(value, list | tuple) else value
    extra = kwargs.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    return body


# -- one captured call -----------------------------------------------------------
class _Call:
    """Everything known about one call, turned into a ``Trace`` off-thread."""

    def __init__(self, capture: Capture, kwargs: dict[str, Any]) -> None:
        self.capture = capture
        self.id = new_id()
        self.created_at = time.time()
        self.t0 = time.perf_counter()
        headers = kwargs.get("extra_headers")
        self.request = _snapshot(kwargs)
        # Same precedence as the gateway: header, then OpenAI's ``metadata`` /
        # ``user`` body fields, then the wrapper's defaults.
        meta = self.request.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        user = self.request.get("user")
        self.task = _header(headers, TASK_HEADER) or meta.get("task") or meta.get("protege_task") or capture.task
        self.session_id = _header(headers, SESSION_HEADER) or meta.get("session_id") or capture.session_id
        self.client_id = (
            _header(headers, CLIENT_HEADER) or meta.get("client_id") or (user if isinstance(user, str) else None)
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
            # The upstream answered but the SDK could not parse it: keep the answer.
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


def _mark(obj: Any, trace_id: str) -> None:
    try:
        setattr(obj, TRACE_ID_ATTR, trace_id)
    except Exception:  # a frozen or slotted object: the id is on the client instead
        pass


def trace_id_of(obj: Any) -> str | None:
    """The trace id recorded for a response, stream or raw response returned by
    a wrapped client (``None`` for anything else)."""
    return getattr(obj, TRACE_ID_ATTR, None)


# -- streams -------------------------------------------------------------------
def _tap_stream(stream: Any, call: _Call) -> None:
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
    _mark(stream, call.id)


def _tap_async_stream(stream: Any, call: _Call) -> None:
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
    _mark(stream, call.id)


# -- the wrapper -----------------------------------------------------------------
class Capture:
    """Where a wrapped client's calls go, and the defaults they are tagged with."""

    def __init__(
        self,
        store: Any,
        writer: CaptureWriter,
        *,
        client_id: str | None = None,
        session_id: str | None = None,
        task: str | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.client_id = client_id
        self.session_id = session_id
        self.task = task

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every call captured so far is in the store (or the spool)."""
        return self.writer.flush(timeout)

    def _begin(self, client: Any, kwargs: dict[str, Any]) -> tuple[_Call | None, dict[str, Any], bool]:
        raw_mode = _header(kwargs.get("extra_headers"), _RAW_HEADER.lower())
        if raw_mode not in (None, "true"):
            # ``with_streaming_response``: the caller reads the body itself, so
            # there is nothing we could record without consuming it.
            return None, kwargs, False
        messages = kwargs.get("messages")
        if messages is not None and not isinstance(messages, list | tuple) and not _is_sentinel(messages):
            kwargs = {**kwargs, "messages": list(messages)}  # a one-shot iterable is read once, here
        call = _Call(self, kwargs)
        client.last_trace_id = call.id
        send = dict(kwargs)
        if raw_mode is None:
            send["extra_headers"] = {**dict(kwargs.get("extra_headers") or {}), _RAW_HEADER: "true"}
        return call, send, raw_mode == "true"

    def _finish(self, call: _Call, raw: Any, wants_raw: bool, *, is_async: bool) -> Any:
        from openai import AsyncStream, Stream

        parsed = raw.parse() if hasattr(raw, "http_response") and hasattr(raw, "parse") else raw
        if isinstance(parsed, Stream | AsyncStream):
            call.stream_started(raw)
            (_tap_async_stream if is_async else _tap_stream)(parsed, call)
        else:
            call.completed(raw, parsed)
            _mark(parsed, call.id)
        _mark(raw, call.id)
        return raw if wants_raw else parsed

    def sync_method(self, client: Any, original: Callable[..., Any]) -> Callable[..., Any]:
        import openai

        def create(*args: Any, **kwargs: Any) -> Any:
            call, send, wants_raw = self._begin(client, kwargs)
            if call is None:
                return original(*args, **kwargs)
            try:
                raw = original(*args, **send)
            except openai.OpenAIError as exc:
                call.failed(exc)
                raise
            try:
                return self._finish(call, raw, wants_raw, is_async=False)
            except Exception as exc:  # an answer came back but could not be parsed
                call.failed(exc, raw)
                raise

        create.__wrapped__ = original  # type: ignore[attr-defined]
        create.__doc__ = original.__doc__
        return create

    def async_method(self, client: Any, original: Callable[..., Any]) -> Callable[..., Any]:
        import openai

        async def create(*args: Any, **kwargs: Any) -> Any:
            call, send, wants_raw = self._begin(client, kwargs)
            if call is None:
                return await original(*args, **kwargs)
            try:
                raw = await original(*args, **send)
            except openai.OpenAIError as exc:
                call.failed(exc)
                raise
            try:
                return self._finish(call, raw, wants_raw, is_async=True)
            except Exception as exc:  # an answer came back but could not be parsed
                call.failed(exc, raw)
                raise

        create.__wrapped__ = original  # type: ignore[attr-defined]
        create.__doc__ = original.__doc__
        return create


def _open_store(db_url: str | None) -> Any:
    from protege.config import default_db_url
    from protege.store import open_store

    url = db_url or default_db_url()
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = open_store(url)
        return store


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _writer_for(store: Any, redact: Callable[[Trace], Trace] | None) -> CaptureWriter:
    """A writer with its own spool file: one per process and store, because two
    processes replaying one file would race, and a trace must be replayed into
    the store it was meant for. Spools left by dead processes are adopted."""
    import hashlib

    from protege.config import protege_home

    key = hashlib.sha256(str(getattr(store, "url", id(store))).encode()).hexdigest()[:10]
    spool_dir = protege_home() / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)
    spool = spool_dir / f"sdk-{key}-{os.getpid()}-{next(_writer_seq)}.jsonl"
    orphans = [*spool_dir.glob(f"sdk-{key}-*.replaying"), *spool_dir.glob(f"sdk-{key}-*.jsonl")]
    for orphan in sorted(orphans):
        try:
            pid = int(orphan.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        # Claim it by renaming first: of two processes starting at once, one wins.
        claimed = orphan.with_name(f"{orphan.name}.claimed-{os.getpid()}")
        try:
            os.rename(orphan, claimed)
        except OSError:
            continue
        with open(claimed, "rb") as src, open(spool, "ab") as dst:
            dst.write(src.read())
        claimed.unlink()
    return CaptureWriter(store, WriterConfig(spool_path=spool), redact=redact)


def _patch_client(client: Any, capture: Capture) -> None:
    """Swap in capturing methods on this client's ``chat.completions`` only.
    Wrapping again replaces them (new defaults), never stacks them."""
    import openai

    is_async = isinstance(client, openai.AsyncOpenAI)
    completions = client.chat.completions
    make = capture.async_method if is_async else capture.sync_method
    for name in ("create", "parse"):
        unbound = getattr(type(completions), name, None)
        if unbound is not None:
            setattr(completions, name, make(client, unbound.__get__(completions)))
    # ``with_raw_response`` snapshots ``create`` when first read: rebuild it on ours.
    completions.__dict__.pop("with_raw_response", None)
    client.protege = capture
    client.last_trace_id = None

    class_copy = type(client).copy.__get__(client)

    def copy(*args: Any, **kwargs: Any) -> Any:
        # ``client.with_options(timeout=...)`` makes a new client: keep capturing.
        new = class_copy(*args, **kwargs)
        _patch_client(new, client.protege)
        return new

    client.copy = copy
    client.with_options = copy


def wrap(
    client: Any,
    *,
    store: Any = None,
    db_url: str | None = None,
    client_id: str | None = None,
    session_id: str | None = None,
    task: str | None = None,
    redact: Callable[[Trace], Trace] | None = None,
) -> Any:
    """Capture every chat completion ``client`` makes into the trace store.

    ``client`` is an ``openai.OpenAI`` or ``openai.AsyncOpenAI``; the same
    object is returned, with ``client.last_trace_id`` updated on each call and
    ``_protege_trace_id`` set on each returned response or stream. ``task``,
    ``session_id`` and ``client_id`` tag every call; one call overrides them
    with ``extra_headers={"X-Protege-Task": ..., "X-Protege-Session": ...}``.
    ``redact`` rewrites each trace before it is stored. Writes happen in a
    background thread; ``flush()`` waits for them, and they are flushed at exit.
    """
    global _last_capture
    import openai

    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        raise TypeError(f"protege.wrap expects openai.OpenAI or openai.AsyncOpenAI, got {type(client).__name__}")
    if store is None:
        store = _open_store(db_url)
    with _lock:
        shared = _shared_writers.get(id(store))
        if redact is None and shared is not None and shared[0] is store and not shared[1]._closed:
            writer = shared[1]
        else:
            writer = _writer_for(store, redact)
            if redact is None:
                _shared_writers[id(store)] = (store, writer)
        _all_writers.add(writer)
    capture = Capture(store, writer, client_id=client_id, session_id=session_id, task=task)
    _patch_client(client, capture)
    _last_capture = capture
    return client


def flush(timeout: float = 30.0) -> bool:
    """Wait until every call captured by any wrapped client is stored."""
    return all(w.flush(timeout) for w in list(_all_writers))


@atexit.register
def _close_all() -> None:
    for w in list(_all_writers):
        try:
            w.close(timeout=10.0)
        except Exception as exc:  # pragma: no cover - exit path
            from protege.capture.writer import log_failure

            log_failure("protege: could not flush captured traces at exit", exc)


def feedback(
    trace_id: str | None = None,
    session_id: str | None = None,
    score: float | None = None,
    label: str | None = None,
    comment: str | None = None,
    db_url: str | None = None,
    *,
    store: Any = None,
    meta: dict[str, Any] | None = None,
) -> Feedback:
    """Attach a score and/or label to one trace (``client.last_trace_id``) or a
    whole session. Goes to ``store``, else ``db_url``, else the store of the
    last ``wrap()`` call in this process, else the default store."""
    if not trace_id and not session_id:
        raise ValueError("feedback needs a trace_id or a session_id")
    if score is None and label is None:
        raise ValueError("feedback needs a score or a label")
    if store is None:
        if db_url is None and _last_capture is not None:
            store = _last_capture.store
        else:
            store = _open_store(db_url)
    fb = Feedback(
        trace_id=trace_id,
        session_id=session_id,
        score=float(score) if score is not None else None,
        label=label,
        comment=comment,
        meta=meta or {},
    )
    return store.add_feedback(fb)
