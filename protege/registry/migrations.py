"""Registry tables (migration ids 400-499): adapters and their status history."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

MIGRATIONS: list[Migration] = [
    Migration(
        400,
        "adapters and adapter events",
        (
            """CREATE TABLE adapters (
                id TEXT PRIMARY KEY,
                task_id TEXT NOT NULL,
                version INTEGER NOT NULL,
                base_model TEXT NOT NULL,
                dataset_id TEXT,
                dataset_hash TEXT,
                config TEXT,
                metrics TEXT,
                path TEXT,
                status TEXT NOT NULL,
                status_reason TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE UNIQUE INDEX ux_adapters_task_version ON adapters (task_id, version)",
            "CREATE INDEX ix_adapters_status ON adapters (status)",
            # At most one promoted adapter per task, enforced by the database
            # itself (partial indexes exist on both SQLite and PostgreSQL).
            "CREATE UNIQUE INDEX ux_adapters_promoted ON adapters (task_id) WHERE status = 'promoted'",
            """CREATE TABLE adapter_events (
                id TEXT PRIMARY KEY,
                adapter_id TEXT NOT NULL,
                task_id TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                from_status TEXT,
                to_status TEXT NOT NULL,
                reason TEXT
            )""",
            "CREATE INDEX ix_adapter_events_adapter ON adapter_events (adapter_id)",
            "CREATE INDEX ix_adapter_events_task ON adapter_events (task_id, at)",
        ),
    ),
    # Model selection results (`protege select`): kept so training can default
    # to the best candidate and reports can show why it was chosen.
    Migration(
        401,
        "model selections",
        (
            """CREATE TABLE model_selections (
                id TEXT PRIMARY KEY,
                task_id TEXT NOT NULL,
                dataset_version TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                best_model TEXT,
                best_mode TEXT,
                constraints TEXT,
                results TEXT NOT NULL
            )""",
            "CREATE INDEX ix_model_selections_task ON model_selections (task_id, created_at)",
        ),
    ),
]

adapters = sa.Table(
    "adapters",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("base_model", sa.Text, nullable=False),
    sa.Column("dataset_id", sa.Text),
    sa.Column("dataset_hash", sa.Text),
    sa.Column("config", sa.Text),
    sa.Column("metrics", sa.Text),
    sa.Column("path", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("status_reason", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

adapter_events = sa.Table(
    "adapter_events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("adapter_id", sa.Text, nullable=False),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("from_status", sa.Text),
    sa.Column("to_status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
)

model_selections = sa.Table(
    "model_selections",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("dataset_version", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("best_model", sa.Text),
    sa.Column("best_mode", sa.Text),
    sa.Column("constraints", sa.Text),
    sa.Column("results", sa.Text, nullable=False),
)
