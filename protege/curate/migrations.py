"""Curate's tables (ids 100-199): the curated view beside the raw traces,
and one row per curation run.

``curated.request`` holds only the top-level request keys that scrubbing
changed (usually ``messages``), NULL when nothing changed; ``curated.response``
the scrubbed response, NULL when unchanged. The curated trace is the raw one
overlaid with them (``iter_curated``), so tool schemas, the bulk of a request,
are not stored twice."""

from __future__ import annotations

import sqlalchemy as sa

from protege.store.migrations import Migration
from protege.store.schema import metadata

MIGRATIONS: list[Migration] = [
    Migration(
        100,
        "curated view and curation runs",
        (
            """CREATE TABLE curated (
                trace_id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL,
                kept INTEGER NOT NULL,
                reason TEXT,
                exact_hash TEXT,
                near_dup_group TEXT,
                minhash TEXT,
                request TEXT,
                response TEXT,
                encrypted INTEGER NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                curated_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX ix_curated_kept ON curated (kept, trace_id)",
            "CREATE INDEX ix_curated_exact_hash ON curated (exact_hash)",
            "CREATE INDEX ix_curated_near_dup_group ON curated (near_dup_group)",
            "CREATE INDEX ix_curated_run_id ON curated (run_id)",
            """CREATE TABLE curate_runs (
                id TEXT PRIMARY KEY,
                started_at DOUBLE PRECISION NOT NULL,
                finished_at DOUBLE PRECISION,
                config TEXT,
                counts TEXT
            )""",
        ),
    ),
]

# Query-side definitions; the DDL above is what creates them.
curated = sa.Table(
    "curated",
    metadata,
    sa.Column("trace_id", sa.Text, primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("kept", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("exact_hash", sa.Text),
    sa.Column("near_dup_group", sa.Text),
    sa.Column("minhash", sa.Text),
    sa.Column("request", sa.Text),
    sa.Column("response", sa.Text),
    sa.Column("encrypted", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("curated_at", sa.Float, nullable=False),
    extend_existing=True,
)

curate_runs = sa.Table(
    "curate_runs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("config", sa.Text),
    sa.Column("counts", sa.Text),
    extend_existing=True,
)
