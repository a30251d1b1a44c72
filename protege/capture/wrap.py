"""In-process capture: ``protege.wrap(client)`` around the official ``openai`` client.

The wrapped client is the same object, so ``isinstance`` checks and every other
resource keep working; only ``chat.completions.create`` and ``.parse`` (and their
``with_raw_response`` twins) are replaced by versions that record each call.

Why the calls go through the SDK's raw-response path: it hands us the HTTP
response, so the stored ``response`` is the teacher's JSON byte for byte instead
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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protege.capture.call import (
    RAW_HEADER,
    Call,
    header,
    is_sentinel,
    mark,
    tap_async_stream,
    tap_stream,
)

# The documented way to find a call's trace (docs/CONTRACTS.md) stays here.
from protege.capture.call import trace_id_of as trace_id_of
from protege.capture.writer import CaptureWriter, WriterConfig
from protege.store.records import Feedback, Trace

if TYPE_CHECKING:
    from protege.store.db import TraceStore

log = logging.getLogger("protege.capture")

_lock = threading.Lock()
# One writer (one thread, one batch stream) per store, shared by the clients
# wrapped around it; a client with its own ``redact`` gets its own writer.
_shared_writers: dict[int, tuple[Any, CaptureWriter]] = {}
_all_writers: set[CaptureWriter] = set()
_writer_seq = itertools.count()
_stores: dict[str, Any] = {}  # url -> store opened by wrap()/feedback()
_last_capture: Capture | None = None


# -- the wrapper -----------------------------------------------------------------
class Capture:
    """Where a wrapped client's calls go, and the defaults they are tagged with."""

    def __init__(
        self,
        store: TraceStore,
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

    def _begin(self, client: Any, kwargs: dict[str, Any]) -> tuple[Call | None, dict[str, Any], bool]:
        raw_mode = header(kwargs.get("extra_headers"), RAW_HEADER.lower())
        if raw_mode not in (None, "true"):
            # ``with_streaming_response``: the caller reads the body itself, so
            # there is nothing we could record without consuming it.
            return None, kwargs, False
        messages = kwargs.get("messages")
        if messages is not None and not isinstance(messages, list | tuple) and not is_sentinel(messages):
            kwargs = {**kwargs, "messages": list(messages)}  # a one-shot iterable is read once, here
        call = Call(self, kwargs)
        client.last_trace_id = call.id
        send = dict(kwargs)
        if raw_mode is None:
            send["extra_headers"] = {**dict(kwargs.get("extra_headers") or {}), RAW_HEADER: "true"}
        return call, send, raw_mode == "true"

    def _finish(self, call: Call, raw: Any, wants_raw: bool, *, is_async: bool) -> Any:
        from openai import AsyncStream, Stream

        parsed = raw.parse() if hasattr(raw, "http_response") and hasattr(raw, "parse") else raw
        if isinstance(parsed, Stream | AsyncStream):
            call.stream_started(raw)
            (tap_async_stream if is_async else tap_stream)(parsed, call)
        else:
            call.completed(raw, parsed)
            mark(parsed, call.id)
        mark(raw, call.id)
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
    from protege.database import open_store

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


def _writer_for(store: TraceStore, redact: Callable[[Trace], Trace] | None) -> CaptureWriter:
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
    store: TraceStore = None,
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
    store: TraceStore = None,
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
