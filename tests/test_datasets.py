from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from protege.cli.main import cli
from protege.database import open_store
from protege.datasets import (
    DatasetConfig,
    build_dataset,
    detect_output_type,
    detect_prefix,
    list_datasets,
    load_dataset,
    stratified_group_split,
    trace_to_row,
)
from protege.store import Trace

SYSTEM = "You route support tickets. Use the tools."
TOOLS = {
    name: {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
    for name in ("search", "lookup", "escalate", "extra")
}


def _call_trace(i: int, session: str, tool: str, *, task: str = "t1", system: str = SYSTEM,
                tools: list[str] | None = None, near: str | None = None) -> Trace:
    offered = [TOOLS[n] for n in (tools or ["search", "lookup", "escalate"])]
    meta = {"curate": {"near_dup_group": near}} if near else {}
    return Trace(
        id=f"T{i:06d}",
        request={
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"ticket {i}"}],
            "tools": offered,
        },
        response={
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": f"c{i}", "type": "function",
                             "function": {"name": tool, "arguments": json.dumps({"q": f"ticket {i}"})}}
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
        },
        session_id=session,
        task_id=task,
        meta=meta,
    )


def _text_trace(i: int, content: str, *, task: str, response_format: dict | None = None) -> Trace:
    req = {"model": "m", "messages": [{"role": "user", "content": f"message {i}"}]}
    if response_format:
        req["response_format"] = response_format
    return Trace(
        id=f"X{i:06d}",
        request=req,
        response={"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]},
        task_id=task,
        session_id=f"s{i}",
    )


def _workload(n_sessions: int = 80, seed: int = 1) -> list[Trace]:
    """Sessions of 1-6 calls; tools 50/30/20; near-duplicate groups that
    straddle sessions."""
    rng = random.Random(seed)
    traces, i = [], 0
    for s in range(n_sessions):
        for _ in range(rng.randint(1, 6)):
            tool = rng.choices(["search", "lookup", "escalate"], weights=[5, 3, 2])[0]
            near = f"nd{rng.randrange(40)}" if rng.random() < 0.3 else None
            traces.append(_call_trace(i, f"sess{s}", tool, near=near))
            i += 1
    return traces


def _split_of(ds) -> dict[str, str]:
    return {r["id"]: name for name in ("train", "validation", "test") for r in ds.split(name)}


def test_split_groups_sessions_and_near_dups_and_stratifies(store, tmp_path: Path) -> None:
    traces = _workload()
    traces.append(_call_trace(10_000, "other", "search", task="t2"))  # another task stays out
    store.add_traces(traces)
    ds = build_dataset(store, "t1", DatasetConfig(root=tmp_path))
    split = _split_of(ds)
    mine = [t for t in traces if t.task_id == "t1"]
    assert set(split) == {t.id for t in mine}
    by_session, by_near = defaultdict(set), defaultdict(set)
    for t in mine:
        by_session[t.session_id].add(split[t.id])
        if t.meta.get("curate"):
            by_near[t.meta["curate"]["near_dup_group"]].add(split[t.id])
    assert all(len(s) == 1 for s in by_session.values())
    assert all(len(s) == 1 for s in by_near.values())
    n = len(mine)
    counts = ds.manifest["counts"]
    assert sum(counts.values()) == n
    assert abs(counts["test"] / n - 0.2) < 0.08 and abs(counts["validation"] / n - 0.1) < 0.06
    per_tool = Counter(t.request and t.response["choices"][0]["message"]["tool_calls"][0]["function"]["name"] for t in mine)
    test_tool = Counter(r["completion"]["tool_calls"][0]["function"]["name"] for r in ds.test)
    for tool, total in per_tool.items():
        assert abs(test_tool[tool] / total - 0.2) < 0.12, (tool, test_tool[tool], total)
    m = ds.manifest
    assert m["output_type"] == "tool_call" and m["source"] == "raw"
    assert m["prefix"]["system"] == SYSTEM
    assert [t["function"]["name"] for t in m["prefix"]["tools"]] == ["search", "lookup", "escalate"]
    assert m["prefix"]["tools_identical"] is True
    row = ds.train[0]
    assert set(row) == {"id", "session_id", "messages", "tools", "tool_choice", "response_format", "completion", "meta"}
    assert row["messages"][0]["role"] == "system" and row["completion"]["role"] == "assistant"
    assert ds.path == tmp_path / "t1" / "v1"


def test_stratified_group_split_unit() -> None:
    rng = random.Random(0)
    strata = [rng.choice("aaaabbbcc") for _ in range(2000)]
    groups = [i // 4 for i in range(2000)]
    out = stratified_group_split(strata, groups, {"train": 0.7, "validation": 0.1, "test": 0.2}, seed=3)
    assert out == stratified_group_split(strata, groups, {"train": 0.7, "validation": 0.1, "test": 0.2}, seed=3)
    for g in range(500):
        assert len({out[i] for i in range(4 * g, 4 * g + 4)}) == 1
    for k in "abc":
        rows = [i for i, s in enumerate(strata) if s == k]
        share = sum(out[i] == "test" for i in rows) / len(rows)
        assert abs(share - 0.2) < 0.03


def test_split_of_functions_called_once_follows_the_fractions() -> None:
    # Requests that bring their own functions: every row its own stratum. Each
    # such stratum alone would always go to the biggest split.
    strata = [f"fn_{i}" for i in range(400)] + ["shared"] * 100
    out = stratified_group_split(strata, list(range(500)), {"train": 0.64, "validation": 0.08, "test": 0.28})
    once = Counter(out[:400])
    assert abs(once["test"] / 400 - 0.28) < 0.02 and abs(once["validation"] / 400 - 0.08) < 0.02
    assert abs(Counter(out[400:])["test"] / 100 - 0.28) < 0.03


def test_prefix_detection() -> None:
    rows = [trace_to_row(_call_trace(i, f"s{i}", "search")) for i in range(5)]
    p = detect_prefix(rows)
    assert p["system"] == SYSTEM and len(p["tools"]) == 3 and p["tools_identical"]
    varied = rows + [trace_to_row(_call_trace(9, "s9", "search", system=SYSTEM + " Today is Monday."))]
    assert detect_prefix(varied)["system"] is None
    more_tools = rows + [trace_to_row(_call_trace(8, "s8", "search", tools=["search", "extra"]))]
    p = detect_prefix(more_tools)
    assert [t["function"]["name"] for t in p["tools"]] == ["search"] and not p["tools_identical"]
    disjoint = rows + [trace_to_row(_call_trace(7, "s7", "extra", tools=["extra"]))]
    assert detect_prefix(disjoint)["tools"] is None


def test_output_types() -> None:
    labels = [trace_to_row(_text_trace(i, ["positive", "negative", "neutral"][i % 3], task="x")) for i in range(30)]
    assert detect_output_type(labels) == "label"
    js = [trace_to_row(_text_trace(i, json.dumps({"name": f"n{i}", "age": i}), task="x")) for i in range(10)]
    assert detect_output_type(js) == "json"
    fmt = [trace_to_row(_text_trace(i, f"free {i}", task="x", response_format={"type": "json_object"})) for i in range(4)]
    assert detect_output_type(fmt) == "json"
    text = [trace_to_row(_text_trace(i, f"A longer answer number {i} that explains things.", task="x")) for i in range(10)]
    assert detect_output_type(text) == "text"
    calls = [trace_to_row(_call_trace(i, "s", "search")) for i in range(3)]
    assert detect_output_type(calls + text[:2]) == "tool_call"


def test_label_task_dataset_stratified_by_label(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    store.add_traces([_text_trace(i, ["spam", "ham"][i % 5 == 0], task="spam") for i in range(100)])
    ds = build_dataset(store, "spam", DatasetConfig(root=tmp_path / "ds"))
    assert ds.manifest["output_type"] == "label" and ds.manifest["labels"] == ["ham", "spam"]
    test = Counter(r["completion"]["content"] for r in ds.test)
    assert test["ham"] == 4 and test["spam"] == 16


def test_hash_stability_versioning_and_load(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    root = tmp_path / "ds"
    traces = _workload(30)
    store.add_traces(traces)
    cfg = DatasetConfig(root=root)
    v1 = build_dataset(store, "t1", cfg)
    again = build_dataset(store, "t1", DatasetConfig(root=root))
    assert again.reused and again.version == "v1" and again.hash == v1.hash
    assert [r["id"] for r in again.test] == [r["id"] for r in v1.test]
    store.add_traces([_call_trace(99_999, "new-session", "lookup")])
    v2 = build_dataset(store, "t1", cfg)
    assert v2.version == "v2" and not v2.reused and v2.hash != v1.hash
    reseeded = build_dataset(store, "t1", DatasetConfig(root=root, seed=7))
    assert reseeded.version == "v3" and reseeded.manifest["seed"] == 7
    assert load_dataset("t1", root=root).version == "v3"
    old = load_dataset("t1", "v1", root=root)
    assert old.hash == v1.hash and len(old.train) == len(v1.train)
    assert load_dataset("t1", 2, root=root).version == "v2"
    with pytest.raises(FileNotFoundError, match="no dataset v9"):
        load_dataset("t1", "v9", root=root)
    listed = list_datasets(store, "t1")
    assert [d["version"] for d in listed] == ["v3", "v2", "v1"]
    assert listed[-1]["hash"] == v1.hash and listed[-1]["counts"] == v1.manifest["counts"]
    capped = build_dataset(store, "t1", DatasetConfig(root=root, max_examples=20))
    assert sum(capped.manifest["counts"].values()) <= 20
    sessions = {r["session_id"] for r in capped.rows()}
    full_sessions = Counter(t.session_id for t in traces)
    assert all(sum(1 for r in capped.rows() if r["session_id"] == s) == full_sessions[s] for s in sessions)


def test_curated_view_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import protege.curate as curate

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    traces = _workload(20)
    store.add_traces(traces)
    kept = traces[::2]

    def fake_iter_curated(store, *, task_id=None):
        return iter([t for t in kept if t.task_id == task_id])

    monkeypatch.setitem(curate.__dict__, "iter_curated", fake_iter_curated)
    ds = build_dataset(store, "t1", DatasetConfig(root=tmp_path / "ds"))
    assert ds.manifest["source"] == "curated"
    assert {r["id"] for r in ds.rows()} == {t.id for t in kept}
    with pytest.raises(ValueError, match="no curated traces"):
        build_dataset(store, "nothing", DatasetConfig(root=tmp_path / "ds", source="curated"))


def test_bfcl_multi_turn_dataset_keeps_sessions_whole(tmp_path: Path) -> None:
    from protege.importers.bfcl import import_bfcl

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    import_bfcl(store, ["multi_turn_base"], limit=12)
    store.set_task_ids({r["id"]: "fs" for r in store.trace_columns(["id"])})
    ds = build_dataset(store, "fs", DatasetConfig(root=tmp_path / "ds"))
    split = _split_of(ds)
    by_session = defaultdict(set)
    for r in ds.rows():
        by_session[r["session_id"]].add(split[r["id"]])
        assert r["meta"]["bfcl"]["category"] == "multi_turn_base"
    assert len(by_session) == 12 and all(len(s) == 1 for s in by_session.values())
    assert ds.manifest["prefix"]["system"] and ds.manifest["output_type"] == "tool_call"


def test_cli_build_list_show_and_errors(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    store = open_store(db)
    store.add_traces(_workload(20))
    store.close()
    runner = CliRunner()
    res = runner.invoke(cli, ["dataset", "build", "t1", "--db", db, "--json", "--seed", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["version"] == "v1" and out["reused"] is False and out["seed"] == 2
    assert "uncurated" in res.stderr or "raw traces" in res.stderr
    res = runner.invoke(cli, ["dataset", "build", "t1", "--db", db, "--json", "--seed", "2"])
    assert json.loads(res.stdout)["reused"] is True
    res = runner.invoke(cli, ["dataset", "list", "--db", db, "--json"])
    assert [d["version"] for d in json.loads(res.stdout)] == ["v1"]
    res = runner.invoke(cli, ["dataset", "show", "t1", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["task_id"] == "t1"
    res = runner.invoke(cli, ["dataset", "show", "t1"])
    assert res.exit_code == 0 and "t1 v1" in res.stdout
    for args, msg in [
        (["dataset", "build", "missing", "--db", db], "no usable traces for task 'missing'"),
        (["dataset", "build", "t1", "--db", db, "--test-frac", "1.5"], "test-frac must be in [0, 1)"),
        (["dataset", "show", "missing"], "no dataset for task 'missing'"),
        (["dataset", "show", "t1", "--version", "v7"], "no dataset v7"),
    ]:
        res = runner.invoke(cli, args)
        assert res.exit_code == 2, res.output
        lines = [line for line in res.stderr.strip().splitlines() if line.startswith("protege: error")]
        assert len(lines) == 1 and msg in lines[0] and "Traceback" not in res.output


def test_students_own_answers_never_become_training_data(tmp_path, monkeypatch):
    from protege.capture import build_trace
    from protege.database import open_store
    from protege.datasets import DatasetConfig, build_dataset

    monkeypatch.setenv("PROTEGE_HOME", str(tmp_path / "home"))
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    traces = []
    for i in range(40):
        req = {"model": "m", "messages": [{"role": "user", "content": f"say {i}"}]}
        resp = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"label-{i % 3}"},
                             "finish_reason": "stop"}]}
        traces.append(build_trace(req, resp, task_id="t", session_id=f"s{i}",
                                  served_by="student" if i % 4 == 0 else "teacher"))
    store.add_traces(traces)
    ds = build_dataset(store, "t", DatasetConfig(seed=0, source="raw"))
    ids = {r["id"] for split in (ds.train, ds.validation, ds.test) for r in split}
    assert ids == {t.id for t in traces if t.served_by != "student"}
