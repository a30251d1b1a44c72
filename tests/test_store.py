from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from protege.capture import build_trace
from protege.database import MIGRATIONS, open_store
from protege.store import EncryptionError, Feedback, Trace
from protege.store.migrations import migrate


def _req(text: str = "hi") -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "x_unknown_field": {"kept": True},
    }


def _resp() -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def test_round_trip_keeps_payloads_verbatim(store):
    t = build_trace(_req(), _resp(), client_id="app", session_id="s1", task_tag="weather", latency_ms=12.5)
    store.add_trace(t)
    got = store.get_trace(t.id)
    assert got is not None
    assert got.request == _req()
    assert got.response == _resp()
    assert got.tools_offered == ["get_weather"]
    assert got.tools_called == ["get_weather"]
    assert got.finish_reason == "tool_calls"
    assert (got.prompt_tokens, got.completion_tokens) == (10, 5)
    assert got.upstream_model == "gpt-4o-mini-2024-07-18"
    assert got.cost_usd is not None and got.cost_usd > 0
    assert store.get_trace(t.id[:20]).id == t.id  # unique prefix lookup


def test_ids_are_time_sortable_and_inserts_idempotent(store):
    traces = [build_trace(_req(str(i)), _resp()) for i in range(5)]
    assert [t.id for t in traces] == sorted(t.id for t in traces)
    assert store.add_traces(traces) == 5
    store.add_traces(traces)  # a replayed batch must not duplicate
    assert store.count_traces() == 5
    assert [t.request["messages"][0]["content"] for t in store.iter_traces(batch_size=2)] == list("01234")


def test_filters_and_task_assignment(store):
    a = build_trace(_req(), _resp(), client_id="a")
    b = build_trace(_req(), None, client_id="b", status="error", error="boom", http_status=500)
    store.add_traces([a, b])
    assert store.count_traces(client_id="a") == 1
    assert store.count_traces(status="error") == 1
    store.set_task_ids({a.id: "task-1"})
    assert store.get_trace(a.id).task_id == "task-1"
    with pytest.raises(ValueError):
        store.count_traces(nope=1)


def test_feedback_on_trace_and_session(store):
    t = store.add_trace(build_trace(_req(), _resp(), session_id="s9"))
    store.add_feedback(Feedback(trace_id=t.id, score=1.0, label="good"))
    store.add_feedback(Feedback(session_id="s9", score=0.0))
    assert [f.label for f in store.feedback_for(trace_id=t.id)] == ["good"]
    assert len(store.feedback_for(session_id="s9")) == 1
    with pytest.raises(ValueError):
        store.add_feedback(Feedback(trace_id=t.id))


def test_prune_older_than(store):
    old = build_trace(_req(), _resp())
    old.created_at = time.time() - 40 * 86400
    new = build_trace(_req(), _resp())
    store.add_traces([old, new])
    store.add_feedback(Feedback(trace_id=old.id, score=1))
    assert store.prune(30 * 86400) == 1
    assert store.get_trace(old.id) is None and store.get_trace(new.id) is not None
    assert store.feedback_for(trace_id=old.id) == []


def test_encryption_round_trip(db_url):
    from protege.store import PayloadCipher

    key = PayloadCipher.generate_key()
    s = open_store(db_url, encryption_key=key)
    t = s.add_trace(build_trace(_req("secret text"), _resp()))
    with s.engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT request, encrypted FROM traces WHERE id=:i"), {"i": t.id}).one()
    assert raw.encrypted == 1 and "secret text" not in raw.request
    assert s.get_trace(t.id).request["messages"][0]["content"] == "secret text"
    s.close()
    # Without the key: a clear error, not garbage. With a wrong key: the same.
    with pytest.raises(EncryptionError, match="PROTEGE_ENCRYPTION_KEY"):
        open_store(db_url, encryption_key="").get_trace(t.id)
    with pytest.raises(EncryptionError, match="does not match"):
        open_store(db_url, encryption_key="another passphrase").get_trace(t.id)
    # A passphrase works as a key too.
    p = open_store(db_url, encryption_key="correct horse battery staple")
    t2 = p.add_trace(build_trace(_req("x"), _resp()))
    assert open_store(db_url, encryption_key="correct horse battery staple").get_trace(t2.id).request == _req("x")


def test_migrations_on_empty_and_existing_database(db_url):
    engine = open_store(db_url).engine
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM protege_migrations ORDER BY id"))]
    assert ids == [m.id for m in MIGRATIONS]
    # Re-opening applies nothing and keeps data.
    s = open_store(db_url)
    s.add_trace(Trace(request={"model": "m", "messages": []}))
    assert migrate(s.engine, MIGRATIONS) == []
    assert open_store(db_url).count_traces() == 1


def test_migrations_upgrade_an_older_database(db_url):
    """A database at migration 1 gains later migrations and keeps its rows."""
    from protege.store.db import make_engine

    engine = make_engine(db_url)
    migrate(engine)  # the store's own migrations only
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO traces (id, created_at, source, served_by, status, stream, encrypted, request) "
                "VALUES ('01OLD', 1.0, 'gateway', 'teacher', 'ok', 0, 0, '{\"model\":\"m\"}')"
            )
        )
    s = open_store(db_url)
    assert s.get_trace("01OLD").request == {"model": "m"}


def test_bad_url_is_a_clear_error():
    from protege.store import StoreError

    with pytest.raises(StoreError, match="unsupported database"):
        open_store("mysql://x/y")
    with pytest.raises(StoreError, match="cannot open store"):
        open_store("postgresql://nobody@127.0.0.1:1/none")
