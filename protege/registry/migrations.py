"""Registry tables (migration ids 400-499): adapters and their status history,
and the results of model selection."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

_PROMOTED = sa.text("status = 'promoted'")

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
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("updated_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Index("ux_adapters_task_version", "task_id", "version", unique=True),
    sa.Index("ix_adapters_status", "status"),
    # At most one promoted adapter per task, enforced by the database itself
    # (partial indexes exist on both SQLite and PostgreSQL).
    sa.Index("ux_adapters_promoted", "task_id", unique=True, sqlite_where=_PROMOTED, postgresql_where=_PROMOTED),
)

adapter_events = sa.Table(
    "adapter_events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("adapter_id", sa.Text, nullable=False),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("from_status", sa.Text),
    sa.Column("to_status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Index("ix_adapter_events_adapter", "adapter_id"),
    sa.Index("ix_adapter_events_task", "task_id", "at"),
)

# Model selection results (`protege select`): kept so training can default
# to the best candidate and reports can show why it was chosen.
model_selections = sa.Table(
    "model_selections",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("dataset_version", sa.Text),
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("best_model", sa.Text),
    sa.Column("best_mode", sa.Text),
    sa.Column("constraints", sa.Text),
    sa.Column("results", sa.Text, nullable=False),
    sa.Index("ix_model_selections_task", "task_id", "created_at"),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(400, "adapters and adapter events", (adapters, adapter_events)),
    Migration(401, "model selections", (model_selections,)),
)
