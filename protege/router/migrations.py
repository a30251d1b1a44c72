"""Router tables (ids 600-699): rollout mode per task, its history, shadow
comparisons."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

routes = sa.Table(
    "routes",
    metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("canary_pct", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", sa.DOUBLE_PRECISION, nullable=False),
)

route_changes = sa.Table(
    "route_changes",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("canary_pct", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Index("ix_route_changes_task", "task_id"),
)

shadow_results = sa.Table(
    "shadow_results",
    metadata,
    sa.Column("trace_id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text),
    sa.Column("adapter", sa.Text),
    sa.Column("agree", sa.Integer),
    sa.Column("valid", sa.Integer, nullable=False),
    sa.Column("reasons", sa.Text),
    sa.Column("student_response", sa.Text),
    sa.Column("latency_ms", sa.DOUBLE_PRECISION),
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Index("ix_shadow_results_task", "task_id", "created_at"),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(600, "routes and shadow results", (routes, route_changes, shadow_results)),
)
