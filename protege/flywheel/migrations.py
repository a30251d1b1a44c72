"""Flywheel tables (migration ids 700-799): every run, every step's outcome,
and what each task was last trained on (the baseline that drift is measured
against)."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

# config/summary/outcome/fingerprints: JSON text. A step is keyed by its name
# plus its task ("train:TASK"), so a resumed run finds what it already did.
runs_table = sa.Table(
    "flywheel_runs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),  # running | done | failed | waiting_approval
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("summary", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("finished_at", sa.DOUBLE_PRECISION),
    sa.Column("resumed", sa.Integer, nullable=False),
    sa.Index("ix_flywheel_runs_started", "started_at"),
)

steps_table = sa.Table(
    "flywheel_steps",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("step", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("task_id", sa.Text),
    sa.Column("status", sa.Text, nullable=False),  # running | done | failed
    sa.Column("outcome", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("finished_at", sa.DOUBLE_PRECISION),
)

# state: training | gated_out | shadow | awaiting_approval | promoted | retired | demoted
tasks_state_table = sa.Table(
    "flywheel_tasks",
    metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("adapter_id", sa.Text),
    sa.Column("dataset_hash", sa.Text),
    sa.Column("trained_on", sa.Integer, nullable=False),
    sa.Column("trained_until", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("fingerprints", sa.Text),
    sa.Column("centroid", sa.Text),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", sa.DOUBLE_PRECISION, nullable=False),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(700, "flywheel runs, steps and task state", (runs_table, steps_table, tasks_state_table)),
)
