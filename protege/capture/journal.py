"""The gateway's capture journal: every capture item is appended to a local
file before the client gets its answer, so a hard kill of the gateway and its
capture child together loses no acknowledged call.

``write`` (the default) hands each item to the kernel with one ``write(2)``
before the response is sent: it survives any process being killed, and a
background ``fsync`` every ``fsync_interval_s`` bounds what an OS crash or a
power cut can take to that interval. ``fsync`` makes the response wait for an
``fsync`` shared by every call that arrived meanwhile (group commit): nothing
acknowledged is lost even to a power cut, at the price of the disk's flush
latency. ``off`` journals nothing (what is queued is lost to a hard kill).

The journal is a directory of segments, one per gateway process, locked by
that process for its lifetime. A segment is closed every ``segment_s`` and
deleted once the capture writer reports (through a barrier queued behind its
items) that all of them are in the store or the spool. A gateway that starts
finds the segments of dead gateways (their lock is free), feeds their items
to its writer (inserts skip ids already stored) and deletes them.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import os
import pickle
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("protege.capture")

MODES = ("off", "write", "fsync")
_HEADER = struct.Struct(">II")  # payload length, crc32

# What a journal frame may name: the trace builders and the partials over them
# (under protege.gateway.app in journals written before they moved).
_ALLOWED = {
    ("functools", "partial"),
    ("protege.gateway.app", "completion_trace"),
    ("protege.gateway.app", "stream_trace"),
    ("protege.gateway.app", "failure_trace"),
    ("protege.gateway.app", "student_trace"),
    ("protege.gateway.traces", "completion_trace"),
    ("protege.gateway.traces", "stream_trace"),
    ("protege.gateway.traces", "failure_trace"),
    ("protege.gateway.traces", "student_trace"),
    ("protege.store.records", "Trace"),
}


class _Unpickler(pickle.Unpickler):
    # The journal is local, but a file is no reason to run arbitrary code.
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a capture item")
        return super().find_class(module, name)


def encode(item: Any) -> bytes:
    payload = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_segment(path: Path) -> Iterator[Any]:
    """The items of one segment; a frame cut short by a kill ends it."""
    data = path.read_bytes()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        payload = data[pos + _HEADER.size: pos + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            log.warning("protege: journal %s ends with a partial frame (a write cut short); ignored", path)
            return
        pos += _HEADER.size + length
        try:
            yield _Unpickler(io.BytesIO(payload)).load()
        except Exception as exc:
            log.error("protege: unreadable journal frame in %s skipped (%s)", path, type(exc).__name__)


def _lock(path: Path) -> int | None:
    """An exclusive flock on ``path``: its fd, or None when another process holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Journal:
    """``append(item)`` before answering; ``await`` what it returns (fsync mode)."""

    def __init__(self, root: Path, *, mode: str = "write", fsync_interval_s: float = 0.05,
                 segment_s: float = 1.0, barrier: Callable[[Callable[[], None]], None]) -> None:
        if mode not in ("write", "fsync"):
            raise ValueError(f"journal mode must be write or fsync, got {mode!r}")
        self.root = Path(root)
        self.mode = mode
        self.fsync_interval_s = fsync_interval_s
        self.segment_s = segment_s
        self._barrier = barrier
        self.root.mkdir(parents=True, exist_ok=True)
        self.dir = self.root / f"{os.getpid()}-{time.time_ns()}"
        self.dir.mkdir()
        self._lock_fd = _lock(self.dir / "lock")
        self._seq = 0  # segments opened
        self._fd = -1
        self._seg_path: Path | None = None
        self._seg_items = 0
        self._seg_started = 0.0
        self.appended = 0
        self.errors = 0
        # Group commit: written frames, fsynced frames, waiters by frame number.
        self._written = 0
        self._synced = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._to_close: list[int] = []
        self._cv = threading.Condition()
        self._closed = False
        self._open_segment()
        self._syncer = threading.Thread(target=self._sync_loop, name="protege-journal-sync", daemon=True)
        self._syncer.start()

    # -- the hot path -----------------------------------------------------
    def append(self, item: Any) -> asyncio.Future[None] | None:
        if self._seg_items and time.monotonic() - self._seg_started >= self.segment_s:
            self._rotate()
        os.write(self._fd, encode(item))
        self._seg_items += 1
        self.appended += 1
        if self.mode == "write":
            self._written += 1
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cv:
            self._written += 1
            self._waiters.append((self._written, fut))
            self._cv.notify()
        return fut

    def _open_segment(self) -> None:
        self._seq += 1
        self._seg_path = self.dir / f"{self._seq:08d}.seg"
        self._fd = os.open(self._seg_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._seg_items = 0
        self._seg_started = time.monotonic()

    def _rotate(self, *, free: bool = True) -> None:
        old_fd, old_path = self._fd, self._seg_path
        self._open_segment()
        with self._cv:
            self._to_close.append(old_fd)  # the syncer fsyncs it before closing it
            self._cv.notify()
        assert old_path is not None

        def done() -> None:  # every item of the old segment is in the store or the spool
            try:
                old_path.unlink()
            except FileNotFoundError:
                pass

        if free:
            # Queued behind the old segment's items, ahead of the next one's.
            self._barrier(done)

    def reclaim(self) -> tuple[list[Any], Callable[[], None]]:
        """This gateway's own journaled items so far (the capture process that
        held them died), and a callback deleting their segments. Call it from
        the thread that appends."""
        if self._seg_items:
            self._rotate(free=False)
        current = self._seg_path
        segments = sorted(p for p in self.dir.glob("*.seg") if p != current)
        items = [item for seg in segments for item in read_segment(seg)]

        def forget() -> None:
            for seg in segments:
                seg.unlink(missing_ok=True)

        return items, forget

    # -- fsync ------------------------------------------------------------
    def _sync_loop(self) -> None:
        while True:
            with self._cv:
                if self.mode == "fsync":
                    self._cv.wait_for(lambda: self._closed or self._written > self._synced or self._to_close)
                else:
                    self._cv.wait(self.fsync_interval_s)
                closing, self._to_close = self._to_close, []
                target = self._written
                fd = self._fd
                stop = self._closed
            for old in closing:
                self._fsync(old)
                os.close(old)
            if target > self._synced and not stop:
                self._fsync(fd)
            self._synced = max(self._synced, target)
            self._wake(target)
            if stop:
                return

    @staticmethod
    def _fsync(fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:  # e.g. closed by close(); the data is in the kernel already
            log.debug("protege: journal fsync skipped (%s)", type(exc).__name__)

    def _wake(self, upto: int) -> None:
        ready = []
        with self._cv:
            while self._waiters and self._waiters[0][0] <= upto:
                ready.append(self._waiters.popleft()[1])
        for fut in ready:
            loop = fut.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)

    # -- recovery and shutdown --------------------------------------------
    def recover(self) -> tuple[list[Any], Callable[[], None]]:
        """Items journaled by gateways that are gone, and a callback that
        deletes their journals (call it once the writer has them)."""
        items: list[Any] = []
        dead: list[tuple[Path, int]] = []
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and p != self.dir):
            fd = _lock(d / "lock")
            if fd is None:
                continue  # a live gateway's journal
            dead.append((d, fd))
            for seg in sorted(d.glob("*.seg")):
                items.extend(read_segment(seg))
        if items:
            log.warning("protege: recovering %d captures journaled by a gateway that stopped without flushing",
                        len(items))

        def forget() -> None:
            for d, fd in dead:
                shutil.rmtree(d, ignore_errors=True)
                os.close(fd)

        return items, forget

    def close(self, *, delete: bool) -> None:
        """Stop; with ``delete`` (the writer flushed everything) remove this journal."""
        if self._closed:
            return
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._syncer.join(5)
        self._fsync(self._fd)
        os.close(self._fd)
        self._wake(self._written)
        if delete:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log.error("protege: capture did not flush; %s is replayed at the next start", self.dir)
        if self._lock_fd is not None:
            os.close(self._lock_fd)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
