"""Capture in a child process: the same interface as ``CaptureWriter``
(``submit``, ``flush``, ``close``, ``stats``, ``queue_depth``), but parsing
answers, building traces and writing the store happen in another process, so
they never compete with the event loop for the GIL. ``protege serve`` uses it;
tests and embedded use keep the in-process writer.

Submitted items are ``functools.partial`` objects over the module-level trace
builders with plain arguments (bytes, str, numbers), so they pickle cheaply. A
sender thread batches them over a pipe; the child runs a regular
``CaptureWriter`` (queue, batches, spool, replay) and reports its counters
through shared memory. If the child dies, the parent falls back to an
in-process writer for what is still to come and says so loudly.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import pickle
import signal
import threading
import time
from typing import Any

from protege.capture.writer import Barrier, CaptureWriter, WriterConfig, WriterStats

log = logging.getLogger("protege.capture")

_FIELDS = ("written", "spooled", "replayed", "dropped", "build_errors", "store_errors", "dead_lettered", "store_ok",
           "queue")


def _publish(stats: Any, writer: CaptureWriter) -> None:
    s = writer.stats
    values = (s.written, s.spooled, s.replayed, s.dropped, s.build_errors, s.store_errors, s.dead_lettered,
              int(s.store_ok), writer.queue_depth())
    for i, v in enumerate(values):
        stats[i] = v


def _child_main(conn: Any, stats: Any, db_url: str | None, config: WriterConfig, redact: str | None) -> None:
    # The parent decides when to stop (after its own graceful shutdown), so a
    # Ctrl-C sent to the whole process group must not cut the flush short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from protege.gateway.storage import LazyStore, load_redact

    store = LazyStore(db_url)
    writer = CaptureWriter(store, config, redact=load_redact(redact))
    stop = threading.Event()
    send_lock = threading.Lock()

    def reply(message: Any) -> None:
        # From the writer thread (barriers) and this one (flushes).
        with send_lock:
            conn.send_bytes(pickle.dumps(message))

    def publisher() -> None:
        while not stop.wait(0.1):
            _publish(stats, writer)

    threading.Thread(target=publisher, daemon=True, name="protege-capture-stats").start()
    try:
        while True:
            try:
                kind, payload = pickle.loads(conn.recv_bytes())
            except EOFError:  # the parent is gone: keep what we have
                break
            if kind == "items":
                for item in payload:
                    writer.submit(item)
            elif kind == "barrier":
                writer.barrier(lambda token=payload: reply(("barrier", token)))
            elif kind == "flush":
                writer.flush(payload[1])
                _publish(stats, writer)
                reply(("flushed", payload[0]))
            elif kind == "close":
                break
    finally:
        writer.close()
        stop.set()
        _publish(stats, writer)
        store.close()
        try:
            reply(("closed", None))
        except OSError:
            pass


class _Flush:
    def __init__(self, token: int, timeout: float) -> None:
        self.token = token
        self.timeout = timeout
        self.event = threading.Event()


class _Barrier:
    def __init__(self, token: int, callback: Any) -> None:
        self.token = token
        self.callback = callback


class ProcessCaptureWriter:
    """``submit()`` never blocks the caller; ``close()`` flushes the child."""

    def __init__(self, db_url: str | None, config: WriterConfig | None = None, *, redact: str | None = None,
                 batch_interval_s: float = 0.005) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork next to threads and event loops is unsafe
        self.config = config or WriterConfig()
        self.db_url = db_url
        self.redact = redact
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self._shared = ctx.Array("q", len(_FIELDS), lock=False)
        self._shared[_FIELDS.index("store_ok")] = 1
        self._proc = ctx.Process(target=_child_main, name="protege-capture",
                                 args=(child_conn, self._shared, db_url, self.config, redact), daemon=True)
        self._proc.start()
        child_conn.close()
        self._pending: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._batch_interval = batch_interval_s
        self._flushes: dict[int, threading.Event] = {}
        self._barriers: dict[int, Any] = {}
        self._flush_seq = 0
        self._lock = threading.Lock()
        self._closed = False
        self._fallback: CaptureWriter | None = None
        # Called (from a thread of this process) when the child is gone: what
        # it held unstored is in the gateway's journal, which replays it.
        self.on_child_lost: Any = None
        self._fallback_lock = threading.Lock()
        self.submitted = 0
        self._sender = threading.Thread(target=self._send_loop, name="protege-capture-send", daemon=True)
        self._sender.start()
        self._reader = threading.Thread(target=self._read_loop, name="protege-capture-acks", daemon=True)
        self._reader.start()

    # -- producer side ----------------------------------------------------
    def submit(self, item: Any) -> None:
        self.submitted += 1
        if self._fallback is not None:
            self._fallback.submit(item)
            return
        self._pending.append(item)
        if len(self._pending) == 1:
            self._wake.set()

    def _take(self) -> tuple[list[Any], _Flush | _Barrier | None]:
        out: list[Any] = []
        pending = self._pending
        while pending and len(out) < 1000:
            item = pending.popleft()
            if isinstance(item, _Flush | _Barrier):
                return out, item
            out.append(item)
        return out, None

    def _send_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            # Let a few more arrive: one pipe write per batch, not per request.
            time.sleep(self._batch_interval)
            while True:
                batch, marker = self._take()
                if not batch and marker is None:
                    break
                if batch and not self._send(("items", batch)):
                    self._to_fallback(batch)
                if isinstance(marker, _Barrier):
                    if not self._send(("barrier", marker.token)):
                        self._barriers.pop(marker.token, None)
                        self._to_fallback([])
                        self._fallback.barrier(marker.callback)  # type: ignore[union-attr]
                elif marker is not None:
                    # In order after the items before it: the child has them all when it flushes.
                    if not self._send(("flush", (marker.token, marker.timeout))):
                        marker.event.set()
            if self._closed and not self._pending:
                return

    def _send(self, message: Any) -> bool:
        if self._fallback is not None:
            return False
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            with self._lock:
                self._conn.send_bytes(data)
            return True
        except (OSError, EOFError, pickle.PicklingError) as exc:
            log.critical("protege: capture process unreachable (%s); capturing in-process from now on", exc)
            return False

    def _to_fallback(self, batch: list[Any]) -> None:
        with self._fallback_lock:  # the sender and the ack reader may both find the child gone
            if self._fallback is None:
                from protege.gateway.storage import LazyStore, load_redact

                self._fallback = CaptureWriter(LazyStore(self.db_url), self.config,
                                               redact=load_redact(self.redact))
        for item in batch:
            self._fallback.submit(item)
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, _Flush):
                item.event.set()
            elif isinstance(item, _Barrier):
                self._barriers.pop(item.token, None)
                self._fallback.barrier(item.callback)
            else:
                self._fallback.submit(item)

    def _read_loop(self) -> None:
        while True:
            try:
                kind, token = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                for ev in list(self._flushes.values()):
                    ev.set()
                if not self._closed:
                    log.critical("protege: the capture process is gone; capturing in-process from now on")
                    self._to_fallback([])
                    self._barriers.clear()  # sent to the child: they will never fire
                    if self.on_child_lost is not None:
                        Barrier(self.on_child_lost).fire()
                return
            if kind == "flushed" and token in self._flushes:
                self._flushes[token].set()
            elif kind == "barrier":
                callback = self._barriers.pop(token, None)
                if callback is not None:
                    Barrier(callback).fire()
            elif kind == "closed":
                return

    # -- the CaptureWriter interface ---------------------------------------
    @property
    def stats(self) -> WriterStats:
        v = {name: int(self._shared[i]) for i, name in enumerate(_FIELDS)}
        out = WriterStats(submitted=self.submitted, written=v["written"], spooled=v["spooled"],
                          replayed=v["replayed"], dropped=v["dropped"], build_errors=v["build_errors"],
                          store_errors=v["store_errors"], dead_lettered=v["dead_lettered"],
                          store_ok=bool(v["store_ok"]))
        if self._fallback is not None:
            f = self._fallback.stats
            out.written += f.written
            out.spooled += f.spooled
            out.replayed += f.replayed
            out.dropped += f.dropped
            out.build_errors += f.build_errors
            out.store_errors += f.store_errors
            out.dead_lettered += f.dead_lettered
            out.store_ok = out.store_ok and f.store_ok
        return out

    def queue_depth(self) -> int:
        depth = len(self._pending) + int(self._shared[_FIELDS.index("queue")])
        if self._fallback is not None:
            depth += self._fallback.queue_depth()
        return depth

    def barrier(self, callback: Any) -> None:
        """Run ``callback`` once the child has stored or spooled every capture
        submitted so far (never, if the child dies first: the journal keeps them)."""
        if self._fallback is not None:
            self._fallback.barrier(callback)
            return
        with self._lock:
            self._flush_seq += 1
            token = self._flush_seq
        self._barriers[token] = callback
        self._pending.append(_Barrier(token, callback))
        self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is in the store or the spool."""
        if self._fallback is not None:
            return self._fallback.flush(timeout)
        with self._lock:
            self._flush_seq += 1
            token = self._flush_seq
        marker = _Flush(token, timeout)
        self._flushes[token] = marker.event
        self._pending.append(marker)
        self._wake.set()
        ok = marker.event.wait(timeout)
        self._flushes.pop(token, None)
        if self._fallback is not None:
            return self._fallback.flush(timeout)
        return ok and self._proc.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._sender.join(timeout)
        if self._fallback is None:
            self._send(("close", None))
            self._proc.join(timeout)
            if self._proc.is_alive():
                log.error("protege: capture process did not stop in %.0f s; spool holds what it had", timeout)
                self._proc.terminate()
        else:
            self._fallback.close(timeout)
        self._reader.join(1)
        self._conn.close()
