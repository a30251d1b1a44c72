"""Tables of the tasks stage (ids 200-299)."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration, add_columns
from protege.store.schema import metadata

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
    sa.Column("traffic_share", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("cost_share", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("token_stats", sa.Text, nullable=False),
    sa.Column("specialisation_score", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("score_parts", sa.Text, nullable=False),
    sa.Column("keywords", sa.Text),
    sa.Column("examples", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("updated_at", sa.DOUBLE_PRECISION, nullable=False),
    # A task the user merged or split: later discovery keeps its traces together.
    sa.Column("pinned", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Index("ix_tasks_status", "status"),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(200, "tasks", (tasks_table,)),
    Migration(201, "tasks.pinned", func=add_columns(tasks_table, "pinned")),
)
