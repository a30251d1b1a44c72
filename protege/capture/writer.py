"""Capture off the hot path: a bounded queue drained by one writer thread in
batches. When the store is down or slow, traces go to an append-only spool
file and are replayed once it answers again. Shutdown flushes everything.

The queue holds *pending* captures: callables or ready traces. Parsing a
response body (a whole SSE stream, say) happens in the writer thread, never
on the request path.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protege.store.records import Trace

log = logging.getLogger("protege.capture")

Pending = Trace | Callable[[], Trace]


@dataclass(kw_only=True)
class WriterConfig:
    queue_size: int = field(default=50_000, metadata={"help": "pending traces held in memory"})
    batch_size: int = field(default=500, metadata={"help": "traces written per transaction"})
    flush_interval_s: float = field(default=0.05, metadata={"help": "longest wait before a partial batch is written"})
    spool_path: Path | None = field(default=None, metadata={"help": "append-only file for traces the store could not take"})
    spool_max_bytes: int = field(default=2 * 1024**3, metadata={"help": "spool size at which new traces are refused loudly"})
    retry_interval_s: float = field(default=2.0, metadata={"help": "how often to retry the store while spooling"})


@dataclass
class WriterStats:
    submitted: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    build_errors: int = 0
    store_errors: int = 0
    store_ok: bool = True


class CaptureWriter:
    """``submit()`` never blocks and never raises; ``close()`` flushes."""

    def __init__(
        self,
        store: Any,
        config: WriterConfig | None = None,
        *,
        redact: Callable[[Trace], Trace] | None = None,
    ) -> None:
        self.store = store
        self.config = config or WriterConfig()
        if self.config.spool_path is None:
            from protege.config import protege_home

            self.config.spool_path = protege_home() / "spool" / "traces.jsonl"
        self.spool_path = Path(self.config.spool_path)
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        self.redact = redact
        self.stats = WriterStats()
        self._queue: queue.Queue[Pending | None] = queue.Queue(self.config.queue_size)
        self._spool_lock = threading.Lock()
        self._last_retry = 0.0
        # Submitted but not yet in the store or the spool; flush() waits for 0.
        self._pending = 0
        self._pending_cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="protege-capture", daemon=True)
        self._closed = False
        self._thread.start()

    # -- producer side ----------------------------------------------------
    def submit(self, item: Pending) -> None:
        self.stats.submitted += 1
        with self._pending_cv:
            self._pending += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._done(1)
            # Memory bound reached: persist to the spool rather than block or drop.
            trace = self._build(item)
            if trace is not None:
                self._spool([trace])

    # -- consumer side ----------------------------------------------------
    def _build(self, item: Pending) -> Trace | None:
        try:
            trace = item() if callable(item) else item
            if self.redact is not None:
                trace = self.redact(trace)
            return trace
        except Exception:  # a capture bug must not take the writer down
            self.stats.build_errors += 1
            log.exception("protege: could not build a trace; it is lost")
            return None

    def _run(self) -> None:
        cfg = self.config
        while True:
            batch: list[Pending] = []
            stop = False
            try:
                item = self._queue.get(timeout=cfg.retry_interval_s)
            except queue.Empty:
                self._maybe_replay()
                continue
            if item is None:
                stop = True
            else:
                batch.append(item)
                deadline = time.monotonic() + cfg.flush_interval_s
                while len(batch) < cfg.batch_size:
                    try:
                        nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
            try:
                traces = []
                for item in batch:
                    trace = self._build(item)
                    if trace is not None:
                        traces.append(trace)
                    # Hand the GIL back between traces: the thread that serves
                    # requests must never wait behind a whole batch.
                    time.sleep(0)
                self._write(traces)
            finally:
                self._done(len(batch))
            self._maybe_replay()
            if stop:
                return

    def _done(self, n: int) -> None:
        with self._pending_cv:
            self._pending -= n
            if self._pending <= 0:
                self._pending_cv.notify_all()

    def queue_depth(self) -> int:
        """Captures waiting for the writer thread (the /metrics gauge)."""
        return self._queue.qsize()

    def _write(self, traces: list[Trace]) -> None:
        if not traces:
            return
        if not self.stats.store_ok and self._spool_has_data():
            # Keep order simple while the store is down: everything goes to the spool.
            self._spool(traces)
            return
        try:
            self.store.add_traces(traces)
            self.stats.written += len(traces)
            self.stats.store_ok = True
        except Exception as exc:
            self.stats.store_errors += 1
            if self.stats.store_ok:
                log.error("protege: trace store unavailable (%s); spooling to %s", exc, self.spool_path)
            self.stats.store_ok = False
            self._last_retry = time.monotonic()
            self._spool(traces)

    def _work_path(self) -> Path:
        return self.spool_path.with_suffix(".replaying")

    def _spool_has_data(self) -> bool:
        if self._work_path().exists():
            return True
        try:
            return self.spool_path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def _spool(self, traces: list[Trace]) -> None:
        lines = "".join(json.dumps(t.to_dict(), ensure_ascii=False) + "\n" for t in traces)
        with self._spool_lock:
            size = self.spool_path.stat().st_size if self.spool_path.exists() else 0
            if size + len(lines) > self.config.spool_max_bytes:
                self.stats.dropped += len(traces)
                log.critical(
                    "protege: SPOOL FULL (%s, %d bytes): %d traces could not be kept; "
                    "bring the store back or raise spool_max_bytes",
                    self.spool_path, size, len(traces),
                )
                return
            with open(self.spool_path, "a", encoding="utf-8") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())
        self.stats.spooled += len(traces)

    def _maybe_replay(self, force: bool = False) -> None:
        if not self._spool_has_data():
            return
        now = time.monotonic()
        if not force and not self.stats.store_ok and now - self._last_retry < self.config.retry_interval_s:
            return
        self._last_retry = now
        self.replay()

    def replay(self) -> int:
        """Move spooled traces into the store; returns how many were replayed.
        Inserts skip ids already stored, so a replay cut short is safe to repeat.
        A ``.replaying`` file left by an interrupted replay (or a crash) is
        replayed first, then whatever was spooled meanwhile."""
        total = 0
        while True:
            with self._spool_lock:
                work = self._work_path()
                if not work.exists():
                    try:
                        size = self.spool_path.stat().st_size
                    except FileNotFoundError:
                        size = 0
                    if size == 0:
                        break
                    os.replace(self.spool_path, work)
            n = self._replay_file(work)
            if n is None:
                break
            total += n
        if total:
            log.info("protege: replayed %d spooled traces into the store", total)
        return total

    def _replay_file(self, work: Path) -> int | None:
        n = 0
        try:
            batch: list[Trace] = []
            with open(work, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        batch.append(Trace.from_dict(json.loads(line)))
                    except (ValueError, TypeError):
                        # Only a write cut short by a crash looks like this.
                        log.error("protege: unreadable spool line %s:%d skipped", work, lineno)
                        continue
                    if len(batch) >= self.config.batch_size:
                        self.store.add_traces(batch)
                        n += len(batch)
                        batch = []
            if batch:
                self.store.add_traces(batch)
                n += len(batch)
        except Exception as exc:
            self.stats.store_ok = False
            log.warning("protege: spool replay failed (%s); will retry", exc)
            return None
        work.unlink()
        self.stats.replayed += n
        self.stats.store_ok = True
        return n

    # -- lifecycle --------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted trace is in the store or the spool."""
        with self._pending_cv:
            return self._pending_cv.wait_for(lambda: self._pending <= 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        # A last chance for anything spooled while the store was down.
        try:
            self._maybe_replay(force=True)
        except Exception:  # pragma: no cover
            log.exception("protege: final replay failed; traces remain in %s", self.spool_path)
