"""The trace store: SQLite (WAL) by default, PostgreSQL at scale, one schema."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from protege.safejson import json_loads
from protege.store import schema
from protege.store.crypto import EncryptionError, PayloadCipher
from protege.store.migrations import MIGRATIONS, Migration, migrate
from protege.store.records import Feedback, Trace

_JSON_LIST_COLUMNS = ("tools_offered", "tools_called")
_PAYLOAD_COLUMNS = frozenset({"request", "response", "meta", *_JSON_LIST_COLUMNS})
# The extracted columns by type: values of another type (an id sent as a list,
# a token count as text) are coerced here, so that one odd trace can never make
# a whole batch fail to insert.
_TEXT_COLUMNS = tuple(c.name for c in schema.traces.c if isinstance(c.type, sa.Text) and c.name not in _PAYLOAD_COLUMNS)
_INT_COLUMNS = tuple(c.name for c in schema.traces.c if isinstance(c.type, sa.Integer))
_FLOAT_COLUMNS = tuple(c.name for c in schema.traces.c if isinstance(c.type, sa.Float))


class StoreError(Exception):
    """The store cannot be opened or used (bad URL, unreachable server)."""


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        # Stored, it would break every reader: refused, so the writer dead-letters it.
        raise ValueError("the payload is nested too deeply to store") from None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = _dumps(value) if isinstance(value, list | dict | tuple) else str(value)
    # PostgreSQL refuses NUL in text; SQLite would keep it and cut it short on read.
    return value.replace("\x00", "") if "\x00" in value else value


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def make_engine(url: str) -> sa.Engine:
    """An engine for ``sqlite:///path`` or ``postgresql://...`` URLs. Bound
    values (prompts, answers, ids) never appear in its errors or its log."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        sa_url = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r} (use sqlite:///path or postgresql://...)") from exc
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        db = sa_url.database
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(sa_url, connect_args={"timeout": 30, "check_same_thread": False},
                                   hide_parameters=True)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy own transactions (pysqlite's implicit BEGIN skips DDL).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    if backend == "postgresql":
        return sa.create_engine(sa_url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)
    raise StoreError(f"unsupported database {backend!r}: use sqlite:///path or postgresql://...")


class TraceSink(Protocol):
    """What capture needs of a store: a batch insert, idempotent by trace id
    (a ``TraceStore``, or the gateway's ``LazyStore`` in front of one)."""

    def add_traces(self, traces: list[Trace]) -> int: ...


class TraceStore:
    """Reads and writes traces and feedback. Opening applies ``migrations``:
    by default the store's own; ``protege.open_store`` passes every stage's.

    Payloads (request, response) are encrypted when a key is given; the
    extracted columns stay in clear so that later stages can query them.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        encryption_key: str | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        from protege.config import StoreConfig

        cfg = StoreConfig()
        self.url = url or cfg.url
        key = encryption_key if encryption_key is not None else cfg.encryption_key
        self.cipher = PayloadCipher(key) if key else None
        self.engine = make_engine(self.url)
        try:
            migrate(self.engine, migrations)
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot open store {self.safe_url}: {exc.orig}") from exc

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def safe_url(self) -> str:
        return sa.make_url(self.engine.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- ways in for the stages' own tables ---------------------------------
    # Each stage owns its tables (``protege.database``) and reads and writes
    # them through these, not through the engine.
    def read(self) -> sa.Connection:
        """A connection for reads: ``with store.read() as conn: ...``."""
        return self.engine.connect()

    def write(self) -> AbstractContextManager[sa.Connection]:
        """A transaction, committed when the block ends and rolled back when it
        raises: ``with store.write() as conn: ...``."""
        return self.engine.begin()

    def has_table(self, name: str) -> bool:
        return sa.inspect(self.engine).has_table(name)

    def reflect(self, name: str) -> sa.Table:
        """Table ``name`` as the database has it (older databases may lack columns)."""
        return sa.Table(name, sa.MetaData(), autoload_with=self.engine)

    def after_fork(self) -> None:
        """In a forked child: drop the parent's pooled connections without closing them."""
        self.engine.dispose(close=False)

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- encoding ---------------------------------------------------------
    def _payload_out(self, value: Any) -> str | None:
        if value is None:
            return None
        text = _dumps(value)
        return self.cipher.encrypt(text) if self.cipher else text

    def _payload_in(self, text: str | None, encrypted: int) -> Any:
        if text is None:
            return None
        if encrypted:
            if self.cipher is None:
                raise EncryptionError(
                    "trace payloads are encrypted: set PROTEGE_ENCRYPTION_KEY to read them"
                )
            text = self.cipher.decrypt(text)
        return json_loads(text)

    def _row_of(self, t: Trace) -> dict[str, Any]:
        row = t.to_dict()
        row["request"] = self._payload_out(t.request)
        row["response"] = self._payload_out(t.response)
        row["encrypted"] = 1 if self.cipher else 0
        row["stream"] = 1 if t.stream else 0
        for col in _JSON_LIST_COLUMNS:
            row[col] = _dumps(row[col] or [])
        row["meta"] = _dumps(t.meta) if t.meta else None
        for col in _TEXT_COLUMNS:
            row[col] = _text(row[col])
        for col in _INT_COLUMNS:
            if col not in ("stream", "encrypted"):
                row[col] = _int(row[col])
        for col in _FLOAT_COLUMNS:
            row[col] = _float(row[col])
        return row

    def _trace_of(self, row: Any) -> Trace:
        m = dict(row._mapping)
        m["request"] = self._payload_in(m["request"], m["encrypted"])
        m["response"] = self._payload_in(m["response"], m["encrypted"])
        m["stream"] = bool(m["stream"])
        for col in _JSON_LIST_COLUMNS:
            m[col] = json.loads(m[col]) if m[col] else []
        m["meta"] = json.loads(m["meta"]) if m["meta"] else {}
        return Trace.from_dict(m)

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing(index_elements=["id"])

    # -- traces -----------------------------------------------------------
    def add_traces(self, traces: Iterable[Trace]) -> int:
        """Insert traces in one transaction; ids already stored are skipped
        (so a replayed batch never duplicates). Returns rows inserted."""
        rows = [self._row_of(t) for t in traces]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(self._insert(schema.traces), rows)
        return result.rowcount if result.rowcount is not None and result.rowcount >= 0 else len(rows)

    def add_trace(self, trace: Trace) -> Trace:
        self.add_traces([trace])
        return trace

    def has_trace(self, trace_id: str) -> bool:
        """Whether a trace with exactly this id is stored (reads no payload)."""
        t = schema.traces
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t.c.id).where(t.c.id == trace_id)).first() is not None

    def get_trace(self, trace_id: str) -> Trace | None:
        t = schema.traces
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == trace_id)).first()
            if row is None and len(trace_id) < 26:
                # Let users type a unique prefix, as with git hashes.
                rows = conn.execute(
                    sa.select(t).where(t.c.id.like(trace_id + "%")).limit(2)
                ).all()
                row = rows[0] if len(rows) == 1 else None
        return self._trace_of(row) if row is not None else None

    def _filtered(self, query: sa.Select, filters: dict[str, Any]) -> sa.Select:
        t = schema.traces
        for key, value in filters.items():
            if value is None:
                continue
            if key == "since":
                query = query.where(t.c.created_at >= value)
            elif key == "until":
                query = query.where(t.c.created_at < value)
            elif key == "ids":
                query = query.where(t.c.id.in_(list(value)))
            elif key in t.c:
                query = query.where(t.c[key] == value)
            else:
                raise ValueError(f"unknown trace filter {key!r}")
        return query

    def iter_traces(
        self, *, batch_size: int = 1000, order: str = "asc", **filters: Any
    ) -> Iterator[Trace]:
        """Every trace matching the filters (column=value, since, until, ids),
        oldest first, read in keyset-paginated batches so memory stays flat."""
        t = schema.traces
        last: str | None = None
        while True:
            q = self._filtered(sa.select(t), filters)
            if last is not None:
                q = q.where(t.c.id > last if order == "asc" else t.c.id < last)
            q = q.order_by(t.c.id.asc() if order == "asc" else t.c.id.desc()).limit(batch_size)
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for row in rows:
                yield self._trace_of(row)
            last = rows[-1].id

    def list_traces(self, *, limit: int = 20, offset: int = 0, **filters: Any) -> list[Trace]:
        """Newest first."""
        t = schema.traces
        q = self._filtered(sa.select(t), filters)
        q = q.order_by(t.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [self._trace_of(r) for r in conn.execute(q).all()]

    def count_traces(self, **filters: Any) -> int:
        t = schema.traces
        q = self._filtered(sa.select(sa.func.count()).select_from(t), filters)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def trace_columns(self, columns: list[str], **filters: Any) -> list[dict[str, Any]]:
        """Extracted columns only (no payload decoding): cheap for statistics."""
        t = schema.traces
        q = self._filtered(sa.select(*[t.c[c] for c in columns]), filters)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def set_task_ids(self, assignments: dict[str, str | None]) -> None:
        """Record the task each trace belongs to (the only column later stages
        write; payloads are never modified)."""
        t = schema.traces
        if not assignments:
            return
        with self.engine.begin() as conn:
            conn.execute(
                t.update().where(t.c.id == sa.bindparam("tid")).values(task_id=sa.bindparam("task")),
                [{"tid": k, "task": v} for k, v in assignments.items()],
            )

    def prune(self, older_than_s: float) -> int:
        """Delete traces (and their feedback) older than ``older_than_s`` seconds."""
        t, f = schema.traces, schema.feedback
        cutoff = time.time() - older_than_s
        with self.engine.begin() as conn:
            old = sa.select(t.c.id).where(t.c.created_at < cutoff)
            conn.execute(f.delete().where(f.c.trace_id.in_(old)))
            res = conn.execute(t.delete().where(t.c.created_at < cutoff))
        return res.rowcount or 0

    # -- feedback ---------------------------------------------------------
    def add_feedback(self, fb: Feedback) -> Feedback:
        if not fb.trace_id and not fb.session_id:
            raise ValueError("feedback needs a trace_id or a session_id")
        if fb.score is None and fb.label is None:
            raise ValueError("feedback needs a score or a label")
        row = {
            "id": fb.id,
            "created_at": fb.created_at,
            "trace_id": fb.trace_id,
            "session_id": fb.session_id,
            "score": fb.score,
            "label": fb.label,
            "comment": fb.comment,
            "meta": _dumps(fb.meta) if fb.meta else None,
        }
        with self.engine.begin() as conn:
            conn.execute(self._insert(schema.feedback), [row])
        return fb

    def feedback_for(self, *, trace_id: str | None = None, session_id: str | None = None) -> list[Feedback]:
        f = schema.feedback
        q = sa.select(f)
        if trace_id:
            q = q.where(f.c.trace_id == trace_id)
        if session_id:
            q = q.where(f.c.session_id == session_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(f.c.created_at)).all()
        out = []
        for r in rows:
            m = dict(r._mapping)
            m["meta"] = json.loads(m["meta"]) if m["meta"] else {}
            out.append(Feedback(**m))
        return out
