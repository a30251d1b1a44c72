-- The store's schema as shipped on 2026-12-07 (commit 41a4472): every migration's
-- DDL in order, written out once and never edited. The same SQL ran on SQLite and
-- PostgreSQL. tests/test_schema_upgrade.py builds old databases from it.

-- protege_migrations
CREATE TABLE IF NOT EXISTS protege_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL);

-- migration 1: traces and feedback
CREATE TABLE traces (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    client_id TEXT,
    session_id TEXT,
    task_tag TEXT,
    task_id TEXT,
    model TEXT,
    upstream_model TEXT,
    served_by TEXT NOT NULL,
    adapter TEXT,
    status TEXT NOT NULL,
    http_status INTEGER,
    error TEXT,
    fallback_reason TEXT,
    latency_ms DOUBLE PRECISION,
    ttft_ms DOUBLE PRECISION,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd DOUBLE PRECISION,
    tools_offered TEXT,
    tools_called TEXT,
    finish_reason TEXT,
    stream INTEGER NOT NULL,
    encrypted INTEGER NOT NULL,
    request TEXT NOT NULL,
    response TEXT,
    meta TEXT
);
CREATE INDEX ix_traces_created_at ON traces (created_at);
CREATE INDEX ix_traces_task_tag ON traces (task_tag);
CREATE INDEX ix_traces_task_id ON traces (task_id);
CREATE INDEX ix_traces_client_id ON traces (client_id);
CREATE INDEX ix_traces_session_id ON traces (session_id);
CREATE INDEX ix_traces_model ON traces (model);
CREATE TABLE feedback (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    trace_id TEXT,
    session_id TEXT,
    score DOUBLE PRECISION,
    label TEXT,
    comment TEXT,
    meta TEXT
);
CREATE INDEX ix_feedback_trace_id ON feedback (trace_id);
CREATE INDEX ix_feedback_session_id ON feedback (session_id);

-- migration 100: curated view and curation runs
CREATE TABLE curated (
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
);
CREATE INDEX ix_curated_kept ON curated (kept, trace_id);
CREATE INDEX ix_curated_exact_hash ON curated (exact_hash);
CREATE INDEX ix_curated_near_dup_group ON curated (near_dup_group);
CREATE INDEX ix_curated_run_id ON curated (run_id);
CREATE TABLE curate_runs (
    id TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    config TEXT,
    counts TEXT
);

-- migration 200: tasks
CREATE TABLE tasks (
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
);
CREATE INDEX ix_tasks_status ON tasks (status);

-- migration 201: tasks.pinned
ALTER TABLE tasks ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;

-- migration 300: datasets
CREATE TABLE datasets (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    path TEXT NOT NULL,
    output_type TEXT,
    counts TEXT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX ux_datasets_task_version ON datasets (task_id, version);
CREATE INDEX ix_datasets_hash ON datasets (hash);

-- migration 400: adapters and adapter events
CREATE TABLE adapters (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    base_model TEXT NOT NULL,
    dataset_id TEXT,
    dataset_hash TEXT,
    config TEXT,
    metrics TEXT,
    path TEXT,
    status TEXT NOT NULL,
    status_reason TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX ux_adapters_task_version ON adapters (task_id, version);
CREATE INDEX ix_adapters_status ON adapters (status);
CREATE UNIQUE INDEX ux_adapters_promoted ON adapters (task_id) WHERE status = 'promoted';
CREATE TABLE adapter_events (
    id TEXT PRIMARY KEY,
    adapter_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX ix_adapter_events_adapter ON adapter_events (adapter_id);
CREATE INDEX ix_adapter_events_task ON adapter_events (task_id, at);

-- migration 401: model selections
CREATE TABLE model_selections (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    dataset_version TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    best_model TEXT,
    best_mode TEXT,
    constraints TEXT,
    results TEXT NOT NULL
);
CREATE INDEX ix_model_selections_task ON model_selections (task_id, created_at);

-- migration 500: evaluations and gate decisions
CREATE TABLE evaluations (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    adapter_id TEXT,
    dataset_hash TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    metrics TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX ix_evaluations_task ON evaluations (task_id, created_at);
CREATE INDEX ix_evaluations_adapter ON evaluations (adapter_id);
CREATE TABLE gate_decisions (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    adapter_id TEXT,
    evaluation_id TEXT,
    decision TEXT NOT NULL,
    reasons TEXT NOT NULL,
    thresholds TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX ix_gate_decisions_task ON gate_decisions (task_id, created_at);

-- migration 600: routes and shadow results
CREATE TABLE routes (
    task_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    canary_pct DOUBLE PRECISION NOT NULL,
    reason TEXT,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE route_changes (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    canary_pct DOUBLE PRECISION NOT NULL,
    reason TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX ix_route_changes_task ON route_changes (task_id);
CREATE TABLE shadow_results (
    trace_id TEXT PRIMARY KEY,
    task_id TEXT,
    adapter TEXT,
    agree INTEGER,
    valid INTEGER NOT NULL,
    reasons TEXT,
    student_response TEXT,
    latency_ms DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX ix_shadow_results_task ON shadow_results (task_id, created_at);

-- migration 700: flywheel runs, steps and task state
CREATE TABLE flywheel_runs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    summary TEXT,
    error TEXT,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    resumed INTEGER NOT NULL
);
CREATE INDEX ix_flywheel_runs_started ON flywheel_runs (started_at);
CREATE TABLE flywheel_steps (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    task_id TEXT,
    status TEXT NOT NULL,
    outcome TEXT,
    reason TEXT,
    error TEXT,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE flywheel_tasks (
    task_id TEXT PRIMARY KEY,
    adapter_id TEXT,
    dataset_hash TEXT,
    trained_on INTEGER NOT NULL,
    trained_until DOUBLE PRECISION NOT NULL,
    fingerprints TEXT,
    centroid TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    updated_at DOUBLE PRECISION NOT NULL
);
