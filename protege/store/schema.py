"""The store's own tables, declared once: queries use them and migrations
create them. Every stage declares its tables on the same ``metadata``.

Floats are DOUBLE PRECISION, the type the first databases were created with:
double on PostgreSQL, REAL on SQLite, so one declaration means the same on both."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

traces = sa.Table(
    "traces",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
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
    sa.Column("latency_ms", sa.DOUBLE_PRECISION),
    sa.Column("ttft_ms", sa.DOUBLE_PRECISION),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("cost_usd", sa.DOUBLE_PRECISION),
    sa.Column("tools_offered", sa.Text),
    sa.Column("tools_called", sa.Text),
    sa.Column("finish_reason", sa.Text),
    sa.Column("stream", sa.Integer, nullable=False),
    sa.Column("encrypted", sa.Integer, nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("response", sa.Text),
    sa.Column("meta", sa.Text),
    sa.Index("ix_traces_created_at", "created_at"),
    sa.Index("ix_traces_task_tag", "task_tag"),
    sa.Index("ix_traces_task_id", "task_id"),
    sa.Index("ix_traces_client_id", "client_id"),
    sa.Index("ix_traces_session_id", "session_id"),
    sa.Index("ix_traces_model", "model"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
    sa.Column("trace_id", sa.Text),
    sa.Column("session_id", sa.Text),
    sa.Column("score", sa.DOUBLE_PRECISION),
    sa.Column("label", sa.Text),
    sa.Column("comment", sa.Text),
    sa.Column("meta", sa.Text),
    sa.Index("ix_feedback_trace_id", "trace_id"),
    sa.Index("ix_feedback_session_id", "session_id"),
)

# Which migrations a database has had (ids given, never generated).
migrations_table = sa.Table(
    "protege_migrations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DOUBLE_PRECISION, nullable=False),
)
