from __future__ import annotations

import json

import jsonschema
import pytest
from click.testing import CliRunner

from protege.cli.main import cli
from protege.importers import bfcl as B
from protege.importers.bfcl import data as BD


def _by_id(category: str, limit: int = 400) -> dict[str, list[B.Exchange]]:
    out: dict[str, list[B.Exchange]] = {}
    for ex in B.iter_bfcl_exchanges([category], limit=limit):
        out.setdefault(ex.meta["bfcl"]["id"], []).append(ex)
    return out


def _calls(ex: B.Exchange) -> list[tuple[str, dict]]:
    msg = ex.response["choices"][0]["message"]
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]


def test_type_mapping_is_recursive_and_keeps_schema_facts() -> None:
    schema = B.to_json_schema(
        {
            "type": "dict",
            "required": ["a", "missing"],
            "properties": {
                "a": {"type": "float", "description": "x", "default": 1.5},
                "b": {"type": "tuple", "items": {"type": "dict", "properties": {"c": {"type": "any"}}}},
                "d": {"type": "string", "enum": ["u", "v"], "optional": True},
                "e": {"type": "array", "items": {"type": "array", "items": {"type": "float"}}},
                "f": {"type": "HashMap"},
            },
        }
    )
    assert schema["type"] == "object"
    assert schema["required"] == ["a"]  # names not among the properties are dropped
    p = schema["properties"]
    assert p["a"] == {"type": "number", "description": "x", "default": 1.5}
    assert p["b"]["type"] == "array" and p["b"]["items"]["type"] == "object"
    assert p["b"]["items"]["properties"]["c"] == {}
    assert p["d"] == {"type": "string", "enum": ["u", "v"]}
    assert p["e"]["items"]["items"] == {"type": "number"}
    assert p["f"] == {"type": "object"}


def test_simple_python_first_values_dotted_names_and_schema_validity() -> None:
    exchanges = _by_id("simple_python", limit=40)
    # simple_python_0: base [10], height [5], unit ["units", ""] (optional -> omitted)
    (ex,) = exchanges["simple_python_0"]
    assert _calls(ex) == [("calculate_triangle_area", {"base": 10, "height": 5})]
    # simple_python_1 calls math.factorial: an invalid OpenAI name, mapped reversibly
    (ex,) = exchanges["simple_python_1"]
    assert _calls(ex) == [("math_factorial", {"number": 5})]
    assert [t["function"]["name"] for t in ex.request["tools"]] == ["math_factorial"]
    assert ex.meta["bfcl"]["tool_names"] == {"math_factorial": "math.factorial"}
    assert ex.meta["bfcl"]["category"] == "simple_python"
    assert ex.meta["bfcl"]["ground_truth"] == [{"math.factorial": {"number": [5]}}]
    assert ex.request["model"] == "gpt-4o"
    assert ex.request["messages"][0]["role"] == "system"
    assert ex.request["messages"][1] == {
        "role": "user",
        "content": "Calculate the factorial of 5 using math functions.",
    }
    for exs in exchanges.values():
        for e in exs:
            schemas = {t["function"]["name"]: t["function"]["parameters"] for t in e.request["tools"]}
            for name, args in _calls(e):
                jsonschema.validate(args, schemas[name])
            assert e.response["object"] == "chat.completion"
            assert e.response["choices"][0]["finish_reason"] == "tool_calls"


def test_parallel_gives_several_tool_calls_and_multiple_picks_the_right_tool() -> None:
    (ex,) = _by_id("parallel", limit=1)["parallel_0"]
    assert _calls(ex) == [
        ("spotify_play", {"artist": "Taylor Swift", "duration": 20}),
        ("spotify_play", {"artist": "Maroon 5", "duration": 15}),
    ]
    ids = [c["id"] for c in ex.response["choices"][0]["message"]["tool_calls"]]
    assert len(set(ids)) == 2
    (ex,) = _by_id("multiple", limit=3)["multiple_2"]
    offered = [t["function"]["name"] for t in ex.request["tools"]]
    assert len(offered) > 1
    assert _calls(ex) == [("country_info_capital", {"country": "Brazil"})]


def test_irrelevance_answers_without_a_call() -> None:
    exchanges = _by_id("irrelevance", limit=10)
    assert len(exchanges) == 10
    for (ex,) in exchanges.values():
        msg = ex.response["choices"][0]["message"]
        assert "tool_calls" not in msg and msg["content"]
        assert ex.response["choices"][0]["finish_reason"] == "stop"
        assert ex.request["tools"]  # the tools were offered all the same
        assert ex.meta["bfcl"]["ground_truth"] == []


def test_multi_turn_runs_the_simulators_and_logs_every_step() -> None:
    (exs,) = _by_id("multi_turn_base", limit=1).values()
    entry = BD._entries("multi_turn_base")[0]
    gt = BD._answers("multi_turn_base")[entry["id"]]["ground_truth"]
    # one trace per ground-truth call plus one closing text answer per user turn
    assert len(exs) == sum(len(t) for t in gt) + len(gt)
    assert [(e.meta["bfcl"]["turn"], e.meta["bfcl"]["step"]) for e in exs[:4]] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert all(e.meta["bfcl"]["session_id"] == exs[0].meta["bfcl"]["session_id"] for e in exs)
    first, second = exs[0], exs[1]
    assert _calls(first) == [("cd", {"folder": "document"})]
    # the next call sees the first call and the simulator's real result
    call_msg, tool_msg = second.request["messages"][-2:]
    assert call_msg["tool_calls"][0]["function"]["name"] == "cd"
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == call_msg["tool_calls"][0]["id"]
    assert json.loads(tool_msg["content"]) == {"current_working_directory": "document"}
    # end of turn 0: a text answer, then turn 1 starts with the new user message
    assert exs[3].response["choices"][0]["message"]["content"]
    assert "tool_calls" not in exs[3].response["choices"][0]["message"]
    assert exs[4].request["messages"][-1] == entry["question"][1][0]
    # a positional ground-truth argument is named from the simulator's signature
    sort_calls = [c for e in exs for c in _calls(e) if c[0] == "sort"]
    assert sort_calls == [("sort", {"file_name": "final_report.pdf"})]
    # the mv into temp really happened in the simulator: later results depend on it
    last_tool = [m for m in exs[-1].request["messages"] if m["role"] == "tool"][-1]
    assert "diff_lines" in last_tool["content"]
    assert exs[0].meta["bfcl"]["expected"] == gt[0][0]


def test_miss_func_adds_held_out_tools_later() -> None:
    entry = BD._entries("multi_turn_miss_func")[0]
    (turn, missing), = entry["missed_function"].items()
    exs = next(iter(_by_id("multi_turn_miss_func", limit=1).values()))
    before = [e for e in exs if e.meta["bfcl"]["turn"] < int(turn)]
    after = [e for e in exs if e.meta["bfcl"]["turn"] >= int(turn)]
    names = lambda e: {t["function"]["name"] for t in e.request["tools"]}  # noqa: E731
    assert all(not set(missing) & names(e) for e in before)
    assert all(set(missing) <= names(e) for e in after)
    # the turn before the tool arrives is answered in text
    no_call = [e for e in before if e.meta["bfcl"]["turn"] == int(turn) - 1]
    assert len(no_call) == 1 and not _calls(no_call[0])


def test_agentic_final_answer_only() -> None:
    (ex,) = _by_id("memory", limit=1)["memory_0-customer-0"]
    content = json.loads(ex.response["choices"][0]["message"]["content"])
    assert content["answer"] == "Michael"
    assert ex.meta["bfcl"]["final_answer_only"] is True


def test_unknown_category_and_groups() -> None:
    with pytest.raises(B.BfclError, match="valid: simple_python"):
        B.resolve_categories(["simple_pyton"])
    assert B.resolve_categories(["multi_turn", "multi_turn_base"]) == list(B.MULTI_TURN)
    assert set(B.available_categories()) >= {"simple_python", "irrelevance", "multi_turn_base", "memory"}


def test_import_is_deterministic_and_idempotent(store) -> None:
    cats = ["simple_python", "parallel", "irrelevance", "multi_turn_base"]
    r1 = B.import_bfcl(store, cats, limit=2)
    n = store.count_traces()
    assert n == r1.traces == r1.inserted > 8
    r2 = B.import_bfcl(store, cats, limit=2)
    assert store.count_traces() == n
    assert r2.inserted == 0 and r2.categories["multi_turn_base"].existing == r1.categories["multi_turn_base"].traces
    traces = list(store.iter_traces(source="import"))
    assert all(t.task_tag is None and t.session_id and t.meta["bfcl"]["id"] for t in traces)
    assert {t.meta["bfcl"]["category"] for t in traces} == set(cats)
    mt = [t for t in traces if t.meta["bfcl"]["category"] == "multi_turn_base"]
    # ids sort in conversation order within a session
    first_session = [t for t in mt if t.session_id == mt[0].session_id]
    steps = [(t.meta["bfcl"]["turn"], t.meta["bfcl"]["step"]) for t in first_session]
    assert steps == sorted(steps)
    t = traces[0]
    assert t.prompt_tokens and t.completion_tokens and t.latency_ms and t.model == "gpt-4o"
    assert t.tools_offered
    # a different system prompt is different traffic: new traces
    B.import_bfcl(store, ["simple_python"], limit=2, system_prompt="You are a terse assistant.")
    assert store.count_traces() == n + 2


def test_cli_import_and_one_line_errors(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    runner = CliRunner()
    res = runner.invoke(cli, ["import", "bfcl", "simple_python", "irrelevance", "--limit", "3", "--db", db, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["categories"]["simple_python"]["inserted"] == 3
    assert data["categories"]["irrelevance"]["traces"] == 3
    res = runner.invoke(cli, ["import", "bfcl", "nonsense", "--db", db])
    assert res.exit_code == 2
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and "unknown BFCL category 'nonsense'" in lines[0] and "simple_python" in lines[0]
    res = runner.invoke(cli, ["import", "bfcl", "parallel", "--limit", "2", "--db", db])
    assert res.exit_code == 0 and "parallel" in res.output


def test_rendering_is_deterministic() -> None:
    cats = ["multi_turn_miss_param", "web_search", "simple_javascript"]
    first = [json.dumps(ex, sort_keys=True) for ex in B.iter_bfcl_exchanges(cats, limit=2)]
    again = [json.dumps(ex, sort_keys=True) for ex in B.iter_bfcl_exchanges(cats, limit=2)]
    assert first == again and len(first) > 6
    (ws,) = _by_id("web_search", limit=1)["web_search_0"]
    answer = json.loads(ws.response["choices"][0]["message"]["content"])
    assert answer["answer"] == "Zhang Yiming" and ws.request["tools"]
    # JavaScript arguments travel as strings, as BFCL's own pipeline passes them
    (js,) = _by_id("simple_javascript", limit=1)["simple_javascript_0"]
    assert _calls(js) == [("validateUserInput", {"inputField": "userInputField", "isComplete": "true"})]
