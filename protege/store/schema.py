"""Table definitions used for queries. The DDL that creates them lives in
``migrations.py``; a test checks that both agree on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

traces = sa.Table(
    "traces",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text),
    sa.Column("session_id", sa.Text),
    sa.Column("task_tag", sa.Text),
    sa.Column("task_id", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("upstream_model", sa.Text),
    sa.Column("served_by", sa.Text, nullable=False),
    sa.Column("adapter", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("fallback_reason", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("ttft_ms", sa.Float),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("cost_usd", sa.Float),
    sa.Column("tools_offered", sa.Text),
    sa.Column("tools_called", sa.Text),
    sa.Column("finish_reason", sa.Text),
    sa.Column("stream", sa.Integer, nullable=False),
    sa.Column("encrypted", sa.Integer, nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("response", sa.Text),
    sa.Column("meta", sa.Text),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("trace_id", sa.Text),
    sa.Column("session_id", sa.Text),
    sa.Column("score", sa.Float),
    sa.Column("label", sa.Text),
    sa.Column("comment", sa.Text),
    sa.Column("meta", sa.Text),
)

migrations_table = sa.Table(
    "protege_migrations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)
