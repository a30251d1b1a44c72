"""The files beside the store: the spool that holds traces while the store is
down, the dead letters it refused, their locks, and the replay of dead letters
(``protege logs spool``). ``protege.capture.writer`` writes them."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protege.safejson import json_dumps_deep, json_loads
from protege.store.records import Trace

if TYPE_CHECKING:
    from protege.store.db import TraceSink


def store_is_down(exc: BaseException) -> bool:
    """Whether a failed insert says the store is unreachable (spool and retry
    later) rather than that this record cannot be stored (dead-letter it)."""
    import sqlalchemy as sa

    from protege.store.db import StoreError

    if isinstance(exc, OSError | StoreError | sa.exc.OperationalError | sa.exc.InterfaceError
                  | sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def store_key(url: str) -> str:
    """A file name for the store at ``url``: the same store (whatever its
    password) always gets the same key, two stores never share one."""
    import hashlib
    import re

    import sqlalchemy as sa

    try:
        u = sa.make_url(url.replace("postgres://", "postgresql://", 1))
        u = sa.engine.URL.create(u.get_backend_name(), u.username, None, u.host, u.port, u.database, u.query)
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
            u = u.set(database=str(Path(u.database).expanduser().resolve()))
        ident = u.render_as_string(hide_password=False)
        slug = f"{u.get_backend_name()}-{Path(u.database or '').stem}"
    except Exception:  # not a URL the store would open either; still one key per text
        ident, slug = url, "store"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", slug)[:40].strip("-.") or "store"
    return f"{slug}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def spool_path_for(url: str | None) -> Path:
    """The default spool of the store at ``url`` (one directory per store)."""
    from protege.config import default_db_url, protege_home

    return protege_home() / "spool" / store_key(url or default_db_url()) / "traces.jsonl"


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """An exclusive lock shared by every process that uses this spool (yields
    whether it was taken; only ``blocking=False`` can yield False)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock here: one process per spool
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_paths(spool_path: Path) -> tuple[Path, Path]:
    """(append lock, replay lock): appends and the rename that starts a replay
    take the first; one replayer at a time holds the second."""
    return spool_path.with_suffix(".lock"), spool_path.with_suffix(".replay.lock")


def dead_letter_path(spool_path: Path) -> Path:
    return spool_path.with_name(spool_path.stem + ".dead.jsonl")


def error_line(trace: Trace, exc: BaseException, *, attempts: int = 1) -> str:
    # The class and the driver's message (not SQLAlchemy's, which lists every
    # bound value): the line holds the payload anyway, the log only the id.
    orig = getattr(exc, "orig", None) or exc
    return json_dumps_deep({
        "trace_id": trace.id, "error_class": type(orig).__name__, "error": str(orig)[:500],
        "failed_at": time.time(), "attempts": attempts, "trace": trace.to_dict(),
    }, ensure_ascii=False, default=str) + "\n"


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def spool_status(spool_path: Path) -> dict[str, Any]:
    """What waits beside the store: spooled traces not yet replayed and dead letters."""
    spool_path = Path(spool_path)
    work = spool_path.with_suffix(".replaying")
    dead = dead_letter_path(spool_path)
    return {"spool": str(spool_path), "spooled": count_lines(spool_path) + count_lines(work),
            "dead_letters": count_lines(dead) + count_lines(dead.with_suffix(".replaying"))}


def replay_dead_letters(store: TraceSink, spool_path: Path) -> tuple[int, int]:
    """Insert each dead letter again (by id, so nothing is stored twice);
    returns (stored, still refused). Those still refused stay in the file with
    their newest error."""
    spool_path = Path(spool_path)
    path = dead_letter_path(spool_path)
    append_lock, replay_lock = lock_paths(spool_path)
    work = path.with_suffix(".replaying")
    with file_lock(replay_lock):
        with file_lock(append_lock):
            if path.exists() and not work.exists():
                os.replace(path, work)
        if not work.exists():
            return 0, 0
        stored, kept = _replay_dead_file(store, work)
        with file_lock(append_lock):
            # Appended to whatever was dead-lettered meanwhile.
            with open(path, "a", encoding="utf-8") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            work.unlink()
    return stored, len(kept)


def _replay_dead_file(store: TraceSink, work: Path) -> tuple[int, list[str]]:
    stored, kept = 0, []
    with open(work, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                entry = json_loads(line)
                trace = Trace.from_dict(entry["trace"])
            except (ValueError, TypeError, KeyError):
                kept.append(line)  # kept as it is: a person may want to look at it
                continue
            try:
                store.add_traces([trace])
            except Exception as exc:
                if store_is_down(exc):
                    raise
                kept.append(error_line(trace, exc, attempts=int(entry.get("attempts", 1)) + 1))
            else:
                stored += 1
    return stored, kept
