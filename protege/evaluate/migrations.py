"""Evaluation tables: one row per evaluation run and per release-gate decision."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

MIGRATIONS = [
    Migration(
        500,
        "evaluations and gate decisions",
        (
            """CREATE TABLE evaluations (
                id TEXT PRIMARY KEY,
                task_id TEXT NOT NULL,
                adapter_id TEXT,
                dataset_hash TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                metrics TEXT NOT NULL,
                report TEXT NOT NULL
            )""",
            "CREATE INDEX ix_evaluations_task ON evaluations (task_id, created_at)",
            "CREATE INDEX ix_evaluations_adapter ON evaluations (adapter_id)",
            """CREATE TABLE gate_decisions (
                id TEXT PRIMARY KEY,
                task_id TEXT NOT NULL,
                adapter_id TEXT,
                evaluation_id TEXT,
                decision TEXT NOT NULL,
                reasons TEXT NOT NULL,
                thresholds TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX ix_gate_decisions_task ON gate_decisions (task_id, created_at)",
        ),
    ),
]

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("adapter_id", sa.Text),
    sa.Column("dataset_hash", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("report", sa.Text, nullable=False),
)

gate_decisions = sa.Table(
    "gate_decisions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("adapter_id", sa.Text),
    sa.Column("evaluation_id", sa.Text),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),
    sa.Column("thresholds", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
