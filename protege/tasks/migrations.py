"""Tables of the tasks stage (ids 200-299)."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

MIGRATIONS: list[Migration] = [
    Migration(
        200,
        "tasks",
        (
            """CREATE TABLE tasks (
                id TEXT PRIMARY KEY,
                label TEXT NOT NULL,
                name TEXT,
                output_type TEXT NOT NULL,
                fingerprints TEXT NOT NULL,
                tags TEXT,
                tool_set TEXT NOT NULL,
                centroid TEXT,
                n_traces INTEGER NOT NULL,
                traffic_share DOUBLE PRECISION NOT NULL,
                cost_share DOUBLE PRECISION NOT NULL,
                token_stats TEXT NOT NULL,
                specialisation_score DOUBLE PRECISION NOT NULL,
                score_parts TEXT NOT NULL,
                keywords TEXT,
                examples TEXT,
                status TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX ix_tasks_status ON tasks (status)",
        ),
    ),
    # A task the user merged or split: later discovery keeps its traces together.
    Migration(201, "tasks.pinned", ("ALTER TABLE tasks ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",)),
]

# name: the user's own name for the task (rename); label: the generated one.
# fingerprints/tags/tool_set/token_stats/score_parts/keywords/examples: JSON text.
# centroid: base64 of the float32 instruction centroid (unit vector).
tasks_table = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("output_type", sa.Text, nullable=False),
    sa.Column("fingerprints", sa.Text, nullable=False),
    sa.Column("tags", sa.Text),
    sa.Column("tool_set", sa.Text, nullable=False),
    sa.Column("centroid", sa.Text),
    sa.Column("n_traces", sa.Integer, nullable=False),
    sa.Column("traffic_share", sa.Float, nullable=False),
    sa.Column("cost_share", sa.Float, nullable=False),
    sa.Column("token_stats", sa.Text, nullable=False),
    sa.Column("specialisation_score", sa.Float, nullable=False),
    sa.Column("score_parts", sa.Text, nullable=False),
    sa.Column("keywords", sa.Text),
    sa.Column("examples", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("pinned", sa.Integer, nullable=False, server_default="0"),
    extend_existing=True,
)
