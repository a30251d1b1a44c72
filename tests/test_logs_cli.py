"""`protege logs ...` and `protege feedback` through click's CliRunner, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from protege.capture import build_trace
from protege.cli.main import cli
from protege.database import open_store
from protege.stats import trace_stats


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich tables, as on a wide terminal


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def _req(text: str, model: str = "gpt-4o-mini", tools: bool = False) -> dict[str, Any]:
    req: dict[str, Any] = {"model": model, "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": text}]}
    if tools:
        req["tools"] = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    return req


def _resp(text: str, tool: bool = False) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": None if tool else f"re: {text}"}
    if tool:
        msg["tool_calls"] = [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{\"q\": \"[bold]x\"}"}}]
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if tool else "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@pytest.fixture
def seeded(db_url: str) -> tuple[str, list[Any]]:
    """Ten calls: two clients, two tags, latencies 10..100 ms, two errors, one old."""
    now = time.time()
    traces = []
    for i in range(10):
        ok = i not in (3, 7)
        traces.append(build_trace(
            _req(f"q{i}", tools=i % 2 == 0), _resp(f"q{i}", tool=i % 2 == 0) if ok else None,
            created_at=now - 60 * (10 - i), client_id="app-a" if i < 6 else "app-b",
            task_tag="search" if i % 2 == 0 else "chat", session_id="s1" if i < 5 else "s2",
            status="ok" if ok else "error", http_status=200 if ok else 503,
            error=None if ok else "upstream unavailable", latency_ms=10.0 * (i + 1),
            ttft_ms=float(i + 1) if i >= 5 else None, served_by="student" if i == 9 else "teacher",
            source="sdk",
        ))
    traces.append(build_trace(_req("old"), _resp("old"), created_at=now - 40 * 86400, client_id="app-a", latency_ms=5.0))
    with open_store(db_url) as s:
        s.add_traces(traces)
    return db_url, traces


def test_list_filters_and_json(seeded):
    db, traces = seeded
    res = run("logs", "list", "--db", db, "--json", "--limit", "3")
    rows = json.loads(res.output)
    assert [r["id"] for r in rows] == sorted((t.id for t in traces), reverse=True)[:3]
    assert "request" not in rows[0]
    rows = json.loads(run("logs", "list", "--db", db, "--json", "--status", "error").output)
    assert {r["id"] for r in rows} == {traces[3].id, traces[7].id}
    rows = json.loads(run("logs", "list", "--db", db, "--json", "--client", "app-b", "--task", "search").output)
    assert {r["id"] for r in rows} == {traces[6].id, traces[8].id}
    rows = json.loads(run("logs", "list", "--db", db, "--json", "--served-by", "student").output)
    assert [r["id"] for r in rows] == [traces[9].id]
    rows = json.loads(run("logs", "list", "--db", db, "--json", "--since", "1h").output)
    assert len(rows) == 10
    table = run("logs", "list", "--db", db)
    assert table.exit_code == 0 and traces[9].id in table.output and "app-b" in table.output


def test_show_renders_and_json(seeded):
    db, traces = seeded
    t = traces[2]
    res = run("logs", "show", t.id, "--db", db)
    assert res.exit_code == 0, res.output
    out = res.output
    assert t.id in out and "q2" in out and "search" in out and '{"q": "[bold]x"}' in out  # content is not markup
    assert "app-a" in out and "30 ms" in out
    err = run("logs", "show", traces[3].id, "--db", db)
    assert "upstream unavailable" in err.output and "503" in err.output
    data = json.loads(run("logs", "show", t.id, "--db", db, "--json").output)
    assert data["request"] == t.request and data["response"] == t.response and data["feedback"] == []


def test_unknown_id_is_one_line(seeded):
    db, _ = seeded
    res = CliRunner().invoke(cli, ["logs", "show", "NOPE", "--db", db])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["protege: error: no trace 'NOPE' (see `protege logs list`)"]


def test_stats_matches_the_traces(seeded):
    db, traces = seeded
    recent = traces[:10]
    data = json.loads(run("logs", "stats", "--db", db, "--since", "24h", "--json").output)
    total = data["total"]
    assert total["count"] == 10 and total["errors"] == 2 and total["error_rate"] == pytest.approx(0.2)
    assert total["prompt_tokens"] == sum(t.prompt_tokens or 0 for t in recent)
    assert total["cost_usd"] == pytest.approx(sum(t.cost_usd or 0 for t in recent))
    # Nearest rank over 10, 20, ... 100 ms.
    assert total["latency_ms"] == {"p50": 50.0, "p95": 100.0, "p99": 100.0}
    assert total["ttft_ms"]["p50"] == 8.0  # of 6..10

    by_client = json.loads(run("logs", "stats", "--db", db, "--since", "24h", "--by", "client", "--json").output)
    groups = {g["key"]: g for g in by_client["groups"]}
    assert groups["app-a"]["count"] == 6 and groups["app-b"]["count"] == 4
    assert groups["app-a"]["errors"] == 1 and groups["app-a"]["latency_ms"]["p50"] == 30.0
    assert groups["app-b"]["ttft_ms"]["p50"] == 8.0 and groups["app-a"]["ttft_ms"]["p50"] == 6.0

    everything = json.loads(run("logs", "stats", "--db", db, "--json", "--by", "status").output)
    assert everything["total"]["count"] == 11
    assert {g["key"]: g["count"] for g in everything["groups"]} == {"ok": 9, "error": 2}
    table = run("logs", "stats", "--db", db, "--by", "task")
    assert table.exit_code == 0 and "search" in table.output and "total" in table.output


def test_stats_function_filters(seeded):
    db, _ = seeded
    with open_store(db) as s:
        res = trace_stats(s, by="task", client_id="app-b")
        assert res["total"]["count"] == 4
        assert {g["key"] for g in res["groups"]} == {"search", "chat"}
        with pytest.raises(ValueError):
            trace_stats(s, by="nope")


def test_bad_duration_is_one_line(seeded):
    db, _ = seeded
    res = CliRunner().invoke(cli, ["logs", "stats", "--db", db, "--since", "soon"])
    assert res.exit_code == 2 and "not a duration" in res.output and "Traceback" not in res.output


def test_prune_asks_then_deletes(seeded):
    db, traces = seeded
    no = CliRunner().invoke(cli, ["logs", "prune", "--older-than", "30d", "--db", db], input="n\n")
    assert no.exit_code == 1
    with open_store(db) as s:
        assert s.count_traces() == 11
    res = run("logs", "prune", "--older-than", "30d", "--yes", "--db", db)
    assert "deleted 1 traces" in res.output
    with open_store(db) as s:
        assert s.count_traces() == 10 and s.get_trace(traces[10].id) is None


def test_feedback_command(seeded):
    db, traces = seeded
    res = run("feedback", "--trace", traces[1].id, "--score", "1", "--label", "good", "--comment", "nice", "--db", db)
    assert res.exit_code == 0 and traces[1].id in res.output
    run("feedback", "--session", "s2", "--label", "resolved", "--db", db)
    with open_store(db) as s:
        [fb] = s.feedback_for(trace_id=traces[1].id)
        assert (fb.score, fb.label, fb.comment) == (1.0, "good", "nice")
        assert s.feedback_for(session_id="s2")[0].label == "resolved"
    shown = run("logs", "show", traces[1].id, "--db", db)
    assert "feedback" in shown.output and "good" in shown.output
    for args, msg in [
        (["--trace", "ZZZ", "--score", "1"], "no trace 'ZZZ'"),
        (["--session", "nope", "--label", "x"], "no traces in session"),
        (["--trace", traces[1].id], "give a --score or a --label"),
        (["--score", "1"], "exactly one of --trace"),
    ]:
        bad = CliRunner().invoke(cli, ["feedback", *args, "--db", db])
        assert bad.exit_code == 2 and msg in bad.output, bad.output


def test_import_export_cli_round_trip(db_url, tmp_path):
    records = [
        {
            "timestamp": f"2024-10-27T03:3{i}:20Z", "workload_id": "triage", "client_id": "fw-client",
            "request": _req(f"t{i}", tools=True), "response": {**_resp(f"t{i}", tool=True), "created": 1_730_000_000 + i},
        }
        for i in range(5)
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    res = run("logs", "import", str(src), "--db", db_url, "--source", "flywheel")
    assert res.exit_code == 0 and "imported 5 traces" in res.output
    res = run("logs", "import", str(src), "--db", db_url, "--json")
    assert json.loads(res.output) == {"read": 5, "imported": 0, "duplicates": 5, "skipped": 0, "errors": []}

    out = tmp_path / "out" / "raw.jsonl"
    res = run("logs", "export", "--format", "raw", "--out", str(out), "--db", db_url, "--task", "triage")
    assert res.exit_code == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["request"] for e in exported] == [r["request"] for r in records]
    assert [e["response"] for e in exported] == [r["response"] for r in records]
    assert {e["source"] for e in exported} == {"flywheel"} and exported[0]["workload_id"] == "triage"

    ft = CliRunner().invoke(cli, ["logs", "export", "--format", "openai", "--db", db_url])
    lines = [json.loads(line) for line in ft.stdout.splitlines()]
    assert len(lines) == 5
    assert lines[0]["messages"][-1]["tool_calls"][0]["function"]["name"] == "search"
    assert lines[0]["tools"] == records[0]["request"]["tools"]
    # A fine-tuning export imports as chat records (into a fresh store).
    ft_file = tmp_path / "ft.jsonl"
    ft_file.write_text(ft.stdout)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert "imported 5 traces" in run("logs", "import", str(ft_file), "--db", fresh).output
    with open_store(fresh) as s:
        assert sorted(s.trace_columns(["tools_called"])[i]["tools_called"] for i in range(5)) == ['["search"]'] * 5


def test_import_errors_are_one_line(db_url, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n{oops\n")
    res = CliRunner().invoke(cli, ["logs", "import", str(bad), "--db", db_url])
    assert res.exit_code == 2
    [line] = res.output.strip().splitlines()
    assert "line 2: not valid JSON" in line and "nothing was imported" in line
    with open_store(db_url) as s:
        assert s.count_traces() == 0
    res = run("logs", "import", str(bad), "--db", db_url, "--skip-invalid")
    assert "imported 1 traces" in res.output and "1 invalid skipped" in res.output and "line 2" in res.output
    missing = CliRunner().invoke(cli, ["logs", "import", str(tmp_path / "nope.jsonl"), "--db", db_url])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_bad_db_url_is_one_line(tmp_path: Path):
    res = CliRunner().invoke(cli, ["logs", "list", "--db", "mysql://x/y"])
    assert res.exit_code == 2 and res.output.startswith("protege: error:") and "Traceback" not in res.output


def test_every_grouping_is_offered():
    from protege.cli.logs import stats
    from protege.stats import GROUP_BY

    [by] = [p for p in stats.params if p.name == "by"]
    assert set(by.type.choices) == set(GROUP_BY)


def test_encrypted_store_lists_without_the_key(tmp_path, monkeypatch):
    from protege.store import PayloadCipher

    key = PayloadCipher.generate_key()
    db = f"sqlite:///{tmp_path / 'enc.db'}"
    with open_store(db, encryption_key=key) as s:
        t = build_trace(_req("secret"), _resp("secret"), latency_ms=12.0)
        s.add_trace(t)
    # Listing and statistics read only the clear columns.
    assert json.loads(run("logs", "list", "--db", db, "--json").output)[0]["id"] == t.id
    assert json.loads(run("logs", "stats", "--db", db, "--json").output)["total"]["count"] == 1
    res = CliRunner().invoke(cli, ["logs", "show", t.id, "--db", db])
    assert res.exit_code == 2 and "PROTEGE_ENCRYPTION_KEY" in res.output and len(res.output.strip().splitlines()) == 1
    monkeypatch.setenv("PROTEGE_ENCRYPTION_KEY", key)
    assert "secret" in run("logs", "show", t.id, "--db", db).output
