"""Capture off the hot path: a bounded queue drained by one writer thread in
batches. When the store is down or slow, traces go to an append-only spool
file and are replayed once it answers again. Shutdown flushes everything.

A trace the store refuses while it takes others (a poison record) is set
aside, alone, in a dead-letter file next to the spool, with its error class;
it never holds up the traces behind it. ``protege logs spool --replay`` puts
dead letters back once the cause is fixed (inserts are idempotent by id).

The queue holds *pending* captures: callables or ready traces. Parsing a
response body (a whole SSE stream, say) happens in the writer thread, never
on the request path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protege.capture.spool import (
    count_lines,
    dead_letter_path,
    error_line,
    file_lock,
    lock_paths,
    spool_path_for,
    store_is_down,
)
from protege.safejson import json_loads
from protege.store.records import Trace

if TYPE_CHECKING:
    from protege.store.db import TraceSink

log = logging.getLogger("protege.capture")

Pending = Trace | Callable[[], Trace]


class Barrier:
    """Queued behind the captures before it: ``callback`` runs once all of
    them are in the store, the spool or the dead letters."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback

    def fire(self) -> None:
        try:
            self.callback()
        except Exception as exc:
            log_failure("protege: capture barrier callback failed", exc)


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
    dead_lettered: int = 0
    store_ok: bool = True


def log_failure(message: str, exc: BaseException, trace_id: str | None = None) -> None:
    """Log a failure without its message: exception messages from drivers and
    parsers quote the values they choke on (prompts, answers, ids), which the
    log must never hold. The stack, without values, goes to DEBUG."""
    import traceback

    name = type(getattr(exc, "orig", None) or exc).__name__
    log.error("%s (%s%s)", message, name, f", trace {trace_id}" if trace_id else "")
    if log.isEnabledFor(logging.DEBUG):
        log.debug("where it failed:\n%s", "".join(traceback.format_tb(exc.__traceback__)))


def _trace_id_of(item: Any) -> str | None:
    if isinstance(item, Trace):
        return item.id
    # The builders' partials carry it as their ``trace_id`` argument.
    func, args = getattr(item, "func", None), getattr(item, "args", ())
    code = getattr(func, "__code__", None)
    if code is None:
        return None
    names = code.co_varnames[:code.co_argcount]
    if "trace_id" not in names:
        return None
    i = names.index("trace_id")
    value = args[i] if i < len(args) else getattr(item, "keywords", {}).get("trace_id")
    return value if isinstance(value, str) else None


class CaptureWriter:
    """``submit()`` never blocks and never raises; ``close()`` flushes."""

    def __init__(
        self,
        store: TraceSink,
        config: WriterConfig | None = None,
        *,
        redact: Callable[[Trace], Trace] | None = None,
    ) -> None:
        self.store = store
        self.config = config or WriterConfig()
        # One spool per store: traces spooled for one database are never replayed into another.
        self.spool_path = Path(self.config.spool_path or spool_path_for(getattr(store, "url", None)))
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        self.redact = redact
        self.stats = WriterStats()
        self._queue: queue.Queue[Pending | None] = queue.Queue(self.config.queue_size)
        self._thread_lock = threading.Lock()
        self._append_lock_path, self._replay_lock_path = lock_paths(self.spool_path)
        self._warn_legacy_spool()
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

    def barrier(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (in the writer thread) once every capture submitted
        so far is stored or spooled."""
        b = Barrier(callback)
        with self._pending_cv:
            self._pending += 1
        try:
            self._queue.put_nowait(b)
        except queue.Full:
            # Never block the caller (the event loop): wait for room elsewhere.
            threading.Thread(target=self._queue.put, args=(b,), daemon=True).start()

    # -- consumer side ----------------------------------------------------
    def _build(self, item: Pending) -> Trace | None:
        try:
            trace = item() if callable(item) else item
            if self.redact is not None:
                trace = self.redact(trace)
            return trace
        except Exception as exc:  # a capture bug must not take the writer down
            self.stats.build_errors += 1
            log_failure("protege: could not build a trace; it is lost", exc, _trace_id_of(item))
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
                    if isinstance(item, Barrier):
                        self._write(traces)
                        traces = []
                        item.fire()
                        continue
                    trace = self._build(item)
                    if trace is not None:
                        traces.append(trace)
                    # Hand the GIL back between traces: the thread that serves
                    # requests must never wait behind a whole batch.
                    time.sleep(0)
                self._write(traces)
            except Exception as exc:  # the writer thread must outlive any one batch
                self.stats.build_errors += len(batch)
                log_failure("protege: capture batch failed", exc)
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
        n, rest = self._store(traces)
        self.stats.written += n
        if rest:
            self._last_retry = time.monotonic()
            self._spool(rest)

    def _store(self, traces: list[Trace]) -> tuple[int, list[Trace]]:
        """Insert ``traces``; returns how many went in and those to spool
        because the store is down.
        A batch the store refuses is retried one trace at a time, and a trace
        refused while others go in is dead-lettered alone."""
        try:
            self.store.add_traces(traces)
        except Exception as exc:
            self.stats.store_errors += 1
            failure = exc
        else:
            self._store_up()
            return len(traces), []
        done = 0
        if store_is_down(failure) and len(traces) > 1:
            # One probe before splitting: a store that is really down refuses it too.
            try:
                self.store.add_traces(traces[:1])
            except Exception as exc:
                if store_is_down(exc):
                    self._store_down(exc)
                    return 0, traces
            else:
                done += 1
                traces = traces[1:]
        if done == 0 and len(traces) == 1 and store_is_down(failure):
            self._store_down(failure)
            return done, traces
        took_any = done > 0
        refused: list[tuple[Trace, BaseException]] = []
        for i, trace in enumerate(traces):
            try:
                self.store.add_traces([trace])
            except Exception as exc:
                self.stats.store_errors += 1
                if store_is_down(exc) and not took_any and not refused:
                    self._store_down(exc)
                    return done, traces[i:]
                refused.append((trace, exc))
            else:
                took_any = True
                done += 1
        if took_any or refused:
            self._store_up()
        self._dead_letter(refused)
        return done, []

    def _store_up(self) -> None:
        if not self.stats.store_ok:
            log.warning("protege: trace store answers again")
        self.stats.store_ok = True

    def _store_down(self, exc: BaseException) -> None:
        if self.stats.store_ok:
            # The class only: a driver's message can quote the bound values (prompts, ids).
            log.error("protege: trace store unavailable (%s); spooling to %s", type(exc).__name__,
                      self.spool_path)
        self.stats.store_ok = False

    def _dead_letter(self, refused: list[tuple[Trace, BaseException]]) -> None:
        if not refused:
            return
        lines = "".join(error_line(t, exc) for t, exc in refused)
        path = dead_letter_path(self.spool_path)
        with self._spool_lock(), open(path, "a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        self.stats.dead_lettered += len(refused)
        for t, exc in refused:
            log.error("protege: trace %s refused by the store (%s); kept in %s", t.id,
                      type(getattr(exc, "orig", None) or exc).__name__, path)

    @contextlib.contextmanager
    def _spool_lock(self) -> Iterator[None]:
        with self._thread_lock, file_lock(self._append_lock_path):
            yield

    def _warn_legacy_spool(self) -> None:
        from protege.config import protege_home

        legacy = protege_home() / "spool" / "traces.jsonl"
        if legacy != self.spool_path and count_lines(legacy):
            log.warning("protege: %s holds traces spooled by an older protege, for a store it did not record; "
                        "`protege logs spool --replay --spool %s --db URL` puts them into theirs", legacy, legacy)

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
        encoded, refused = [], []
        for t in traces:
            try:
                encoded.append(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
            except (ValueError, TypeError, RecursionError) as exc:
                refused.append((t, exc))
        self._dead_letter(refused)
        lines = "".join(encoded)
        traces = [t for t in traces if not any(t is r for r, _ in refused)]
        if not traces:
            return
        with self._spool_lock():
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
        with file_lock(self._replay_lock_path, blocking=False) as mine:
            # Another process replays this spool (same store): leave it to it.
            return self._replay_all() if mine else 0

    def _replay_all(self) -> int:
        total = 0
        while True:
            with self._spool_lock():
                work = self._work_path()
                if not work.exists():
                    try:
                        size = self.spool_path.stat().st_size
                    except FileNotFoundError:
                        size = 0
                    if size == 0:
                        break
                    os.replace(self.spool_path, work)
            n, finished = self._replay_file(work)
            total += n
            if not finished:
                break
        if total:
            log.info("protege: replayed %d spooled traces into the store", total)
        return total

    def _replay_file(self, work: Path) -> tuple[int, bool]:
        """Replay one spool file, record by record in batches. When the store
        goes down midway, what is left is written back to ``work`` (atomically)
        so a later replay starts where this one stopped."""
        n = 0
        with open(work, encoding="utf-8") as fh:
            lines = iter(fh)
            lineno = 0
            while True:
                batch: list[Trace] = []
                for line in lines:
                    lineno += 1
                    if not line.strip():
                        continue
                    try:
                        batch.append(Trace.from_dict(json_loads(line)))
                    except (ValueError, TypeError, RecursionError):
                        # Only a write cut short by a crash looks like this.
                        log.error("protege: unreadable spool line %s:%d skipped", work, lineno)
                        continue
                    if len(batch) >= self.config.batch_size:
                        break
                if not batch:
                    break
                done, rest = self._store(batch)
                n += done
                if rest:
                    tmp = work.with_suffix(".tmp")
                    with open(tmp, "w", encoding="utf-8") as out:
                        out.writelines(json.dumps(t.to_dict(), ensure_ascii=False) + "\n" for t in rest)
                        out.writelines(lines)
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(tmp, work)
                    self.stats.replayed += n
                    log.warning("protege: spool replay stopped, the store is down again; will retry")
                    return n, False
        work.unlink()
        self.stats.replayed += n
        return n, True

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
        except Exception as exc:  # pragma: no cover
            log_failure(f"protege: final replay failed; traces remain in {self.spool_path}", exc)
