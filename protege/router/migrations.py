"""Router tables: rollout mode per task, its history, shadow comparisons."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

MIGRATIONS = [
    Migration(
        600,
        "routes and shadow results",
        (
            """CREATE TABLE routes (
                task_id TEXT PRIMARY KEY,
                mode TEXT NOT NULL,
                canary_pct DOUBLE PRECISION NOT NULL,
                reason TEXT,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE route_changes (
                id TEXT PRIMARY KEY,
                task_id TEXT NOT NULL,
                mode TEXT NOT NULL,
                canary_pct DOUBLE PRECISION NOT NULL,
                reason TEXT,
                at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX ix_route_changes_task ON route_changes (task_id)",
            """CREATE TABLE shadow_results (
                trace_id TEXT PRIMARY KEY,
                task_id TEXT,
                adapter TEXT,
                agree INTEGER,
                valid INTEGER NOT NULL,
                reasons TEXT,
                student_response TEXT,
                latency_ms DOUBLE PRECISION,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX ix_shadow_results_task ON shadow_results (task_id, created_at)",
        ),
    ),
]

routes = sa.Table(
    "routes",
    metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("canary_pct", sa.Float, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
)

route_changes = sa.Table(
    "route_changes",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("canary_pct", sa.Float, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
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
    sa.Column("latency_ms", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
)
