from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from protege.capture.stream import StreamAccumulator
from protege.router import Router, StudentInfo, completion_to_sse, parse_mode, set_route, validate_answer
from protege.router.routes import Route, RouteTable, list_routes, route_history

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def _req(**kw):
    return {"model": "m", "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [WEATHER], **kw}


def _call(name="get_weather", args='{"city": "Paris"}', cid="call_1"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


@pytest.mark.parametrize(
    "message,finish,request_kw,expected",
    [
        ({"content": None, "tool_calls": [_call()]}, "tool_calls", {}, []),
        ({"content": None, "tool_calls": [_call()]}, "length", {}, ["finish_reason:length"]),
        ({"content": None, "tool_calls": [_call("rm_rf")]}, "tool_calls", {}, ["unknown_tool:rm_rf"]),
        ({"content": None, "tool_calls": [_call(args='{"city": ')]}, "tool_calls", {}, ["arguments_not_json:get_weather"]),
        ({"content": None, "tool_calls": [_call(args="[1]")]}, "tool_calls", {}, ["arguments_not_object:get_weather"]),
        ({"content": None, "tool_calls": [_call(args='{"days": 3}')]}, "tool_calls", {}, ["schema:get_weather:'city' is a required property"]),
        ({"content": None, "tool_calls": [_call(args='{"city": "P", "days": "x"}')]}, "tool_calls", {}, ["schema:get_weather:'x' is not of type 'integer'"]),
        ({"content": "It is sunny."}, "stop", {"tool_choice": "required"}, ["tool_choice:required_but_no_call"]),
        ({"content": None, "tool_calls": [_call()]}, "tool_calls", {"tool_choice": "none"}, ["tool_choice:none_but_called"]),
        ({"content": "", "tool_calls": None}, "stop", {}, ["empty_answer"]),
        ({"content": "not json"}, "stop", {"response_format": {"type": "json_object"}}, ["response_format:not_json"]),
        ({"content": '{"a": 1}'}, "stop", {"response_format": {"type": "json_object"}}, []),
        (
            {"content": '{"a": "x"}'},
            "stop",
            {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}},
            ["response_format:schema:'x' is not of type 'integer'"],
        ),
    ],
)
def test_validate_answer(message, finish, request_kw, expected):
    assert validate_answer(_req(**request_kw), {"role": "assistant", **message}, finish) == expected


def test_validate_named_tool_choice_and_foreign_schema_types():
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "dict", "properties": {"x": {"type": "float"}}}}}
    req = _req(tools=[WEATHER, other], tool_choice={"type": "function", "function": {"name": "other"}})
    assert validate_answer(req, {"tool_calls": [_call()]}, "tool_calls") == ["tool_choice:expected:other"]
    # "dict"/"float" are not JSON Schema types: they must not fail a valid call.
    assert validate_answer(req, {"tool_calls": [_call("other", '{"x": 1.5}')]}, "tool_calls") == []


def test_sse_round_trip_through_the_stream_reassembler():
    completion = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 5,
        "model": "student",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [_call(args=json.dumps({"city": "P" * 120})), _call("get_weather", '{"city": "Rome"}', "call_2")],
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    body = b"".join(completion_to_sse(completion, include_usage=True))
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    last = json.loads(events[-2][6:])
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 7
    # Later argument deltas carry no id/name, only the index, as teachers do.
    arg_deltas = [json.loads(e[6:]) for e in events[:-1]]
    later = [c["choices"][0]["delta"]["tool_calls"][0] for c in arg_deltas if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert sum(1 for d in later if "id" in d) == 2 and len(later) > 3
    acc = StreamAccumulator()
    acc.feed_sse_bytes(body)
    assert acc.result()["choices"] == completion["choices"]
    assert acc.result()["usage"] == completion["usage"]


def test_parse_mode():
    assert parse_mode("live") == ("live", 100.0)
    assert parse_mode("canary:25") == ("canary", 25.0)
    assert parse_mode("shadow") == ("shadow", 0.0)
    for bad in ("canary:0", "canary:150", "fast"):
        with pytest.raises(ValueError):
            parse_mode(bad)


def test_routes_in_store_and_table_refresh(store):
    table = RouteTable(store, poll_s=0.05)
    assert table.get("t1").mode == "off"
    set_route(store, "t1", "shadow", reason="first")
    set_route(store, "t1", "canary:10", reason="ramp")
    table.refresh()
    assert table.get("t1").label == "canary:10"
    assert [r.label for r in list_routes(store)] == ["canary:10"]
    assert [h["mode"] for h in route_history(store, "t1")] == ["shadow", "canary"]


def _router(mode: str, student: StudentInfo | None = StudentInfo("t1:v1", frozenset({"get_weather"}))):
    return Router(
        assign=lambda req, tag: ("t1", 1.0) if tag != "unknown" else (None, None),
        promoted=lambda task: student,
        routes=lambda task: Route(task, *parse_mode(mode)),
    )


def test_router_decisions():
    assert _router("live").decide(_req()).target == "student"
    assert _router("live").decide(_req(), tag="unknown").reason == "no_task"
    assert _router("off").decide(_req()).reason == "route_off"
    assert _router("live", None).decide(_req()).reason == "no_adapter"
    shadow = _router("shadow").decide(_req())
    assert (shadow.target, shadow.shadow, shadow.adapter) == ("teacher", True, "t1:v1")
    extra_tool = {"type": "function", "function": {"name": "send_email"}}
    assert _router("live").decide(_req(tools=[WEATHER, extra_tool])).reason == "tools_mismatch"
    assert _router("live").decide(_req(n=2)).reason == "n_gt_1"
    small = StudentInfo("t1:v1", None, max_prompt_chars=5)
    assert _router("live", small).decide(_req()).reason == "context"
    # An adapter not yet promoted runs in the background even on a live route.
    only_shadow = StudentInfo("t1:v2", None, status="shadow")
    d = _router("live", only_shadow).decide(_req())
    assert (d.target, d.shadow) == ("teacher", True)


def test_canary_split_is_close_to_the_percentage():
    r = _router("canary:30")
    served = sum(r.decide(_req(), key=f"session-{i}").target == "student" for i in range(4000))
    assert 0.26 < served / 4000 < 0.34
    # The same key always lands on the same side.
    assert len({r.decide(_req(), key="sticky").target for _ in range(20)}) == 1


def test_route_cli(tmp_path):
    from protege.cli.main import cli

    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    ok = runner.invoke(cli, ["route", "set", "t9", "--mode", "canary:5", "--db", db])
    assert ok.exit_code == 0, ok.output
    listed = runner.invoke(cli, ["route", "list", "--json", "--db", db])
    assert json.loads(listed.output)[0]["mode"] == "canary:5"
    bad = runner.invoke(cli, ["route", "set", "t9", "--mode", "warp", "--db", db])
    assert bad.exit_code == 2 and "unknown route mode" in bad.output and "Traceback" not in bad.output
