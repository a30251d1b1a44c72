"""Schema of the datasets stage (ids 300-399): one row per built dataset version."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

MIGRATIONS: list[Migration] = [
    Migration(
        300,
        "datasets",
        (
            """CREATE TABLE datasets (
                id TEXT PRIMARY KEY,
                task_id TEXT NOT NULL,
                version INTEGER NOT NULL,
                hash TEXT NOT NULL,
                path TEXT NOT NULL,
                output_type TEXT,
                counts TEXT,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE UNIQUE INDEX ux_datasets_task_version ON datasets (task_id, version)",
            "CREATE INDEX ix_datasets_hash ON datasets (hash)",
        ),
    ),
]

datasets_table = (
    metadata.tables["datasets"]
    if "datasets" in metadata.tables
    else sa.Table(
        "datasets",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("output_type", sa.Text),
        sa.Column("counts", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
)
