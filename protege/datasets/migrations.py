"""Schema of the datasets stage (ids 300-399): one row per built dataset version."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

datasets_table = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("output_type", sa.Text),
    sa.Column("counts", sa.Text),
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Index("ux_datasets_task_version", "task_id", "version", unique=True),
    sa.Index("ix_datasets_hash", "hash"),
)

MIGRATIONS: tuple[Migration, ...] = (Migration(300, "datasets", (datasets_table,)),)
