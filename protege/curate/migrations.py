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
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("curated_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Index("ix_curated_kept", "kept", "trace_id"),
    sa.Index("ix_curated_exact_hash", "exact_hash"),
    sa.Index("ix_curated_near_dup_group", "near_dup_group"),
    sa.Index("ix_curated_run_id", "run_id"),
)

curate_runs = sa.Table(
    "curate_runs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("started_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("finished_at", sa.DOUBLE_PRECISION),
    sa.Column("config", sa.Text),
    sa.Column("counts", sa.Text),
)

MIGRATIONS: tuple[Migration, ...] = (Migration(100, "curated view and curation runs", (curated, curate_runs)),)
