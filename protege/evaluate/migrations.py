"""Evaluation tables (ids 500-599): one row per evaluation run and per
release-gate decision."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("adapter_id", sa.Text),
    sa.Column("dataset_hash", sa.Text),
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("report", sa.Text, nullable=False),
    sa.Index("ix_evaluations_task", "task_id", "created_at"),
    sa.Index("ix_evaluations_adapter", "adapter_id"),
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
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Index("ix_gate_decisions_task", "task_id", "created_at"),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(500, "evaluations and gate decisions", (evaluations, gate_decisions)),
)
