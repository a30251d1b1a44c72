"""Flywheel tables (migration ids 700-799): every run, every step's outcome,
and what each task was last trained on (the baseline that drift is measured
against)."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

MIGRATIONS: list[Migration] = [
    Migration(
        700,
        "flywheel runs, steps and task state",
        (
            """CREATE TABLE flywheel_runs (
                id TEXT PRIMARY KEY,
                status TEXT NOT NULL,
                config TEXT NOT NULL,
                summary TEXT,
                error TEXT,
                started_at DOUBLE PRECISION NOT NULL,
                finished_at DOUBLE PRECISION,
                resumed INTEGER NOT NULL
            )""",
            "CREATE INDEX ix_flywheel_runs_started ON flywheel_runs (started_at)",
            """CREATE TABLE flywheel_steps (
                run_id TEXT NOT NULL,
                step TEXT NOT NULL,
                seq INTEGER NOT NULL,
                name TEXT NOT NULL,
                task_id TEXT,
                status TEXT NOT NULL,
                outcome TEXT,
                reason TEXT,
                error TEXT,
                started_at DOUBLE PRECISION NOT NULL,
                finished_at DOUBLE PRECISION,
                PRIMARY KEY (run_id, step)
            )""",
            """CREATE TABLE flywheel_tasks (
                task_id TEXT PRIMARY KEY,
                adapter_id TEXT,
                dataset_hash TEXT,
                trained_on INTEGER NOT NULL,
                trained_until DOUBLE PRECISION NOT NULL,
                fingerprints TEXT,
                centroid TEXT,
                state TEXT NOT NULL,
                reason TEXT,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
]

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
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("resumed", sa.Integer, nullable=False),
    extend_existing=True,
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
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    extend_existing=True,
)

# state: training | gated_out | shadow | awaiting_approval | promoted | retired | demoted
tasks_state_table = sa.Table(
    "flywheel_tasks",
    metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("adapter_id", sa.Text),
    sa.Column("dataset_hash", sa.Text),
    sa.Column("trained_on", sa.Integer, nullable=False),
    sa.Column("trained_until", sa.Float, nullable=False),
    sa.Column("fingerprints", sa.Text),
    sa.Column("centroid", sa.Text),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
    extend_existing=True,
)
