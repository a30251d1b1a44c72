"""Adapter registry: every trained adapter, its provenance and its status.

Status moves ``candidate -> shadow -> promoted -> retired``; every change is an
``adapter_events`` row, so the full history survives. At most one adapter per
task is promoted (a partial unique index enforces it in the database):
promoting one retires the one it replaces, and ``rollback`` re-promotes the
adapter promoted before the current one.

Artifacts live under ``artifacts/adapters/<task_id>/<version>/``.
"""

from __future__ import annotations

import builtins
import json
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from protege.config import artifacts_dir
from protege.ids import new_id
from protege.registry.migrations import adapter_events, adapters

if TYPE_CHECKING:
    from protege.store.db import TraceStore

STATUSES = ("candidate", "shadow", "promoted", "retired")
ROLLED_BACK = "rolled back"

# Allowed moves. Re-promoting a retired adapter is how a rollback works;
# demoting a promoted one to shadow keeps it observable without traffic.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "candidate": ("shadow", "promoted", "retired"),
    "shadow": ("candidate", "promoted", "retired"),
    "promoted": ("shadow", "retired"),
    "retired": ("promoted", "candidate"),
}


class RegistryError(ValueError):
    """Unknown adapter, or a status change the registry does not allow."""


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(kw_only=True)
class AdapterRecord:
    """One registered adapter."""

    id: str
    task_id: str
    version: int
    base_model: str
    path: str | None = None
    dataset_id: str | None = None
    dataset_hash: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "candidate"
    status_reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def ref(self) -> str:
        """Human name: ``<task_id>:v<version>``."""
        return f"{self.task_id}:v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ref"] = self.ref
        return d

    @classmethod
    def from_row(cls, row: Any) -> AdapterRecord:
        m = dict(row._mapping)
        m["config"] = json.loads(m["config"]) if m["config"] else {}
        m["metrics"] = json.loads(m["metrics"]) if m["metrics"] else {}
        return cls(**m)


@dataclass(kw_only=True, frozen=True)
class AdapterEvent:
    """One status change."""

    adapter_id: str
    task_id: str
    at: float
    from_status: str | None
    to_status: str
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adapter_dir(task_id: str, version: int) -> Path:
    """Where a task's adapter version keeps its files."""
    return artifacts_dir() / "adapters" / task_id / str(version)


class Registry:
    """Adapters in the store: ``Registry(store)``."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    # -- locking ------------------------------------------------------------
    @contextmanager
    def _task_txn(self, task_id: str) -> Iterator[sa.Connection]:
        """A transaction that holds the task's write lock, so concurrent
        promotions or registrations of one task serialise."""
        with self.store.write() as conn:
            if self.store.dialect == "postgresql":
                key = 4_000_000_000 + zlib.crc32(task_id.encode())
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            else:
                # A write, even of no rows, takes SQLite's write lock up front.
                conn.execute(sa.text("UPDATE adapters SET updated_at = updated_at WHERE 1 = 0"))
            yield conn

    # -- writes -------------------------------------------------------------
    def next_version(self, task_id: str) -> int:
        with self.store.read() as conn:
            top = conn.execute(sa.select(sa.func.max(adapters.c.version)).where(adapters.c.task_id == task_id))
            return int(top.scalar() or 0) + 1

    def register(
        self,
        task_id: str,
        *,
        base_model: str,
        path: str | Path | None = None,
        dataset_id: str | None = None,
        dataset_hash: str | None = None,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        version: int | None = None,
        status: str = "candidate",
        reason: str | None = None,
    ) -> AdapterRecord:
        """Record a trained adapter. ``version`` defaults to the task's next;
        ``path`` to ``artifacts/adapters/<task_id>/<version>/``."""
        if status not in STATUSES:
            raise RegistryError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        now = time.time()
        with self._task_txn(task_id) as conn:
            if version is None:
                top = conn.execute(sa.select(sa.func.max(adapters.c.version)).where(adapters.c.task_id == task_id))
                version = int(top.scalar() or 0) + 1
            elif conn.execute(
                sa.select(adapters.c.id).where(adapters.c.task_id == task_id, adapters.c.version == version)
            ).first():
                raise RegistryError(f"{task_id}:v{version} is already registered")
            rec = AdapterRecord(
                id=new_id(), task_id=task_id, version=version, base_model=base_model,
                path=str(path if path is not None else adapter_dir(task_id, version)),
                dataset_id=dataset_id, dataset_hash=dataset_hash, config=config or {},
                metrics=metrics or {}, status="candidate", status_reason=reason or "registered",
                created_at=now, updated_at=now,
            )
            row = rec.to_dict()
            row.pop("ref")
            row["config"], row["metrics"] = _dumps(rec.config), _dumps(rec.metrics)
            conn.execute(adapters.insert().values(**row))
            conn.execute(
                adapter_events.insert().values(
                    id=new_id(), adapter_id=rec.id, task_id=task_id, at=now,
                    from_status=None, to_status="candidate", reason=reason or "registered",
                )
            )
            if status != "candidate":
                rec = self._transition(conn, rec, status, reason)
        return rec

    def _current(self, conn: sa.Connection, adapter_id: str) -> AdapterRecord:
        row = conn.execute(sa.select(adapters).where(adapters.c.id == adapter_id)).first()
        if row is None:
            raise RegistryError(f"no adapter {adapter_id!r}")
        return AdapterRecord.from_row(row)

    def _write_status(
        self, conn: sa.Connection, rec: AdapterRecord, to: str, reason: str | None, now: float
    ) -> AdapterRecord:
        conn.execute(
            adapters.update()
            .where(adapters.c.id == rec.id)
            .values(status=to, status_reason=reason, updated_at=now)
        )
        conn.execute(
            adapter_events.insert().values(
                id=new_id(), adapter_id=rec.id, task_id=rec.task_id, at=now,
                from_status=rec.status, to_status=to, reason=reason,
            )
        )
        rec.status, rec.status_reason, rec.updated_at = to, reason, now
        return rec

    def _transition(self, conn: sa.Connection, rec: AdapterRecord, to: str, reason: str | None) -> AdapterRecord:
        if to not in STATUSES:
            raise RegistryError(f"unknown status {to!r}: use one of {', '.join(STATUSES)}")
        if rec.status == to:
            raise RegistryError(f"{rec.ref} is already {to}")
        if to not in TRANSITIONS[rec.status]:
            raise RegistryError(
                f"{rec.ref} is {rec.status}: it can become {' or '.join(TRANSITIONS[rec.status])}, not {to}"
            )
        now = time.time()
        if to == "promoted":
            row = conn.execute(
                sa.select(adapters).where(adapters.c.task_id == rec.task_id, adapters.c.status == "promoted")
            ).first()
            if row is not None:
                self._write_status(conn, AdapterRecord.from_row(row), "retired", f"superseded by {rec.ref}", now)
        return self._write_status(conn, rec, to, reason, now)

    def set_status(self, adapter_id: str, status: str, reason: str | None = None) -> AdapterRecord:
        """Move an adapter to ``status``. Promoting retires the task's
        previously promoted adapter in the same transaction."""
        rec = self.resolve(adapter_id)
        with self._task_txn(rec.task_id) as conn:
            return self._transition(conn, self._current(conn, rec.id), status, reason)

    def promote(self, adapter_id: str, reason: str | None = None) -> AdapterRecord:
        return self.set_status(adapter_id, "promoted", reason)

    def shadow(self, adapter_id: str, reason: str | None = None) -> AdapterRecord:
        return self.set_status(adapter_id, "shadow", reason)

    def retire(self, adapter_id: str, reason: str | None = None) -> AdapterRecord:
        return self.set_status(adapter_id, "retired", reason)

    def rollback(self, task_id: str, reason: str | None = None) -> AdapterRecord:
        """Re-promote the adapter that was promoted before the current one
        (which is retired). Returns the adapter now promoted."""
        with self._task_txn(task_id) as conn:
            cur_row = conn.execute(
                sa.select(adapters).where(adapters.c.task_id == task_id, adapters.c.status == "promoted")
            ).first()
            current = AdapterRecord.from_row(cur_row) if cur_row is not None else None
            # Event ids are time-ordered ULIDs: newest promotion first.
            q = (
                sa.select(adapter_events.c.adapter_id)
                .where(adapter_events.c.task_id == task_id, adapter_events.c.to_status == "promoted")
                .order_by(adapter_events.c.id.desc())
            )
            previous = None
            for (aid,) in conn.execute(q).all():
                if current is not None and aid == current.id:
                    continue
                rec = self._current(conn, aid)
                # An adapter a rollback took out stays out: a second rollback
                # goes further back instead of bouncing between two versions.
                if rec.status == "retired" and (rec.status_reason or "").startswith(ROLLED_BACK):
                    continue
                previous = rec
                break
            if previous is None:
                raise RegistryError(f"task {task_id!r} has no earlier promoted adapter to roll back to")
            now = time.time()
            why = reason or "rollback"
            if current is not None:
                self._write_status(conn, current, "retired", f"{ROLLED_BACK} to {previous.ref}: {why}", now)
            return self._write_status(
                conn, previous, "promoted", f"rollback from {current.ref if current else 'none'}: {why}", now
            )

    def update_metrics(self, adapter_id: str, metrics: dict[str, Any], *, merge: bool = True) -> AdapterRecord:
        """Attach evaluation results (merged into the existing metrics by default)."""
        rec = self.resolve(adapter_id)
        with self._task_txn(rec.task_id) as conn:
            rec = self._current(conn, rec.id)
            rec.metrics = {**rec.metrics, **metrics} if merge else dict(metrics)
            rec.updated_at = time.time()
            conn.execute(
                adapters.update()
                .where(adapters.c.id == rec.id)
                .values(metrics=_dumps(rec.metrics), updated_at=rec.updated_at)
            )
        return rec

    # -- reads --------------------------------------------------------------
    def get(self, ref: str, version: int | None = None) -> AdapterRecord | None:
        """By adapter id (or a unique id prefix), ``task:vN``, or task id with
        ``version`` (default: the task's latest version)."""
        with self.store.read() as conn:
            if version is None:
                row = conn.execute(sa.select(adapters).where(adapters.c.id == ref)).first()
                if row is not None:
                    return AdapterRecord.from_row(row)
                task, sep, v = ref.rpartition(":v")
                if sep and v.isdigit():
                    return self.get(task, int(v))
            q = sa.select(adapters).where(adapters.c.task_id == ref)
            if version is not None:
                q = q.where(adapters.c.version == version)
            row = conn.execute(q.order_by(adapters.c.version.desc()).limit(1)).first()
            if row is None and version is None and len(ref) >= 6:
                rows = conn.execute(sa.select(adapters).where(adapters.c.id.like(ref + "%")).limit(2)).all()
                row = rows[0] if len(rows) == 1 else None
        return AdapterRecord.from_row(row) if row is not None else None

    def resolve(self, ref: str, version: int | None = None) -> AdapterRecord:
        """Like :meth:`get`, but an unknown reference is an error."""
        rec = self.get(ref, version)
        if rec is None:
            raise RegistryError(f"no adapter {ref!r}" + (f" version {version}" if version else ""))
        return rec

    def list(self, task_id: str | None = None, status: str | None = None) -> builtins.list[AdapterRecord]:
        """Newest first."""
        q = sa.select(adapters)
        if task_id is not None:
            q = q.where(adapters.c.task_id == task_id)
        if status is not None:
            if status not in STATUSES:
                raise RegistryError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
            q = q.where(adapters.c.status == status)
        q = q.order_by(adapters.c.created_at.desc(), adapters.c.id.desc())
        with self.store.read() as conn:
            return [AdapterRecord.from_row(r) for r in conn.execute(q)]

    def promoted(self, task_id: str) -> AdapterRecord | None:
        """The task's live adapter (one indexed read; the router polls it)."""
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(adapters).where(adapters.c.task_id == task_id, adapters.c.status == "promoted")
            ).first()
        return AdapterRecord.from_row(row) if row is not None else None

    def promoted_all(self) -> dict[str, AdapterRecord]:
        """Every task's live adapter, by task id."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(adapters).where(adapters.c.status == "promoted")).all()
        return {r.task_id: AdapterRecord.from_row(r) for r in rows}

    def changed_at(self) -> float:
        """Latest change anywhere in the registry: poll this, reload on change."""
        with self.store.read() as conn:
            return float(conn.execute(sa.select(sa.func.max(adapters.c.updated_at))).scalar() or 0.0)

    def history(self, adapter_id: str) -> builtins.list[AdapterEvent]:
        """Every status change of one adapter, oldest first."""
        rec = self.resolve(adapter_id)
        return self._events(adapter_events.c.adapter_id == rec.id)

    def task_history(self, task_id: str) -> builtins.list[AdapterEvent]:
        return self._events(adapter_events.c.task_id == task_id)

    def _events(self, cond: Any) -> builtins.list[AdapterEvent]:
        e = adapter_events
        q = sa.select(e.c.adapter_id, e.c.task_id, e.c.at, e.c.from_status, e.c.to_status, e.c.reason)
        with self.store.read() as conn:
            rows = conn.execute(q.where(cond).order_by(e.c.id)).all()
        return [AdapterEvent(**dict(r._mapping)) for r in rows]
