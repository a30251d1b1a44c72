"""Numbered schema migrations, applied in order when a store is opened.

Plain SQL that means the same on SQLite and PostgreSQL (TEXT, INTEGER, BIGINT,
DOUBLE PRECISION), so one list serves both engines. Append; never edit a
migration that has shipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa


@dataclass(frozen=True)
class Migration:
    id: int
    name: str
    statements: tuple[str, ...] = ()
    # For changes plain SQL cannot express on both engines.
    func: Callable[[sa.Connection], None] | None = None


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "traces and feedback",
        (
            """CREATE TABLE traces (
                id TEXT PRIMARY KEY,
                created_at DOUBLE PRECISION NOT NULL,
                source TEXT NOT NULL,
                client_id TEXT,
                session_id TEXT,
                task_tag TEXT,
                task_id TEXT,
                model TEXT,
                upstream_model TEXT,
                served_by TEXT NOT NULL,
                adapter TEXT,
                status TEXT NOT NULL,
                http_status INTEGER,
                error TEXT,
                fallback_reason TEXT,
                latency_ms DOUBLE PRECISION,
                ttft_ms DOUBLE PRECISION,
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                cost_usd DOUBLE PRECISION,
                tools_offered TEXT,
                tools_called TEXT,
                finish_reason TEXT,
                stream INTEGER NOT NULL,
                encrypted INTEGER NOT NULL,
                request TEXT NOT NULL,
                response TEXT,
                meta TEXT
            )""",
            "CREATE INDEX ix_traces_created_at ON traces (created_at)",
            "CREATE INDEX ix_traces_task_tag ON traces (task_tag)",
            "CREATE INDEX ix_traces_task_id ON traces (task_id)",
            "CREATE INDEX ix_traces_client_id ON traces (client_id)",
            "CREATE INDEX ix_traces_session_id ON traces (session_id)",
            "CREATE INDEX ix_traces_model ON traces (model)",
            """CREATE TABLE feedback (
                id TEXT PRIMARY KEY,
                created_at DOUBLE PRECISION NOT NULL,
                trace_id TEXT,
                session_id TEXT,
                score DOUBLE PRECISION,
                label TEXT,
                comment TEXT,
                meta TEXT
            )""",
            "CREATE INDEX ix_feedback_trace_id ON feedback (trace_id)",
            "CREATE INDEX ix_feedback_session_id ON feedback (session_id)",
        ),
    ),
]


# Each later stage keeps its own migrations beside its code, in its own id range,
# so stages evolve without editing one shared list: curate 100-199, tasks
# 200-299, datasets 300-399, registry (adapters) 400-499, evaluate 500-599,
# router 600-699, flywheel 700-799.
STAGE_MODULES = (
    "protege.curate.migrations",
    "protege.tasks.migrations",
    "protege.datasets.migrations",
    "protege.registry.migrations",
    "protege.evaluate.migrations",
    "protege.router.migrations",
    "protege.flywheel.migrations",
)


def all_migrations() -> list[Migration]:
    """Core migrations plus every stage's, ordered by id."""
    import importlib
    import importlib.util

    found = list(MIGRATIONS)
    for name in STAGE_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            found.extend(importlib.import_module(name).MIGRATIONS)
    return sorted(found, key=lambda m: m.id)


def _ensure_table(conn: sa.Connection) -> None:
    conn.execute(
        sa.text(
            "CREATE TABLE IF NOT EXISTS protege_migrations ("
            "id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
    )


def applied(conn: sa.Connection) -> set[int]:
    _ensure_table(conn)
    return {row[0] for row in conn.execute(sa.text("SELECT id FROM protege_migrations"))}


def migrate(engine: sa.Engine, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations; returns the ids applied. Safe to run from several
    processes at once: PostgreSQL takes an advisory lock, SQLite a write lock."""
    migrations = all_migrations() if migrations is None else migrations
    ids = [m.id for m in migrations]
    if ids != sorted(set(ids)):
        raise RuntimeError(f"migration ids must be unique and increasing: {ids}")
    done: list[int] = []
    with engine.begin() as conn:
        _ensure_table(conn)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7314001)"))
        else:
            # A write takes SQLite's write lock up front, so two openers cannot
            # both apply the same migration.
            conn.execute(sa.text("DELETE FROM protege_migrations WHERE id < 0"))
        have = applied(conn)
        for m in migrations:
            if m.id in have:
                continue
            for stmt in m.statements:
                conn.execute(sa.text(stmt))
            if m.func is not None:
                m.func(conn)
            conn.execute(
                sa.text(
                    "INSERT INTO protege_migrations (id, name, applied_at) VALUES (:i, :n, :t)"
                ),
                {"i": m.id, "n": m.name, "t": time.time()},
            )
            done.append(m.id)
    return done
