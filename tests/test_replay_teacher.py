from __future__ import annotations

import json

import openai
import pytest

from protege.teacher.replay import ReplayIndex, create_replay_app

TOOLS = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {}}}}]


def _resp(content=None, calls=None):
    msg = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    return {
        "id": "chatcmpl-r", "object": "chat.completion", "created": 1, "model": "teacher",
        "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


CALL = {"id": "call_a", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
STEP1 = {"model": "t", "messages": [{"role": "user", "content": "list files"}], "tools": TOOLS}
STEP2 = {
    "model": "t",
    "messages": [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_a", "content": "a.txt b.txt"},
    ],
    "tools": TOOLS,
}


@pytest.fixture
def client():
    idx = ReplayIndex.from_pairs([(STEP1, _resp(calls=[CALL])), (STEP2, _resp("Two files: a.txt, b.txt."))])
    from starlette.testclient import TestClient

    tc = TestClient(create_replay_app(idx))
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=tc)


def test_replay_answers_each_step_of_the_agent_loop(client):
    first = client.chat.completions.create(**STEP1)
    assert first.choices[0].message.tool_calls[0].function.name == "ls"
    second = client.chat.completions.create(**STEP2)
    assert second.choices[0].message.content == "Two files: a.txt, b.txt."


def test_replay_by_position_when_tool_results_differ(client):
    other = json.loads(json.dumps(STEP2))
    other["messages"][2]["content"] = "different listing"
    other["messages"][1]["tool_calls"][0]["id"] = "call_zzz"
    assert client.chat.completions.create(**other).choices[0].message.content.startswith("Two files")


def test_replay_streams_and_refuses_unknown_requests(client):
    chunks = list(client.chat.completions.create(**STEP1, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0][0].function.name == "ls"
    assert chunks[-1].usage.total_tokens == 8
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="t", messages=[{"role": "user", "content": "something new"}])
    assert "no recorded answer" in str(err.value)


def test_replay_from_bfcl_ground_truth():
    from protege.importers.bfcl import iter_bfcl_exchanges

    ex = next(iter(iter_bfcl_exchanges(["simple_python"], limit=1)))
    idx = ReplayIndex.from_source("bfcl:simple_python", limit=3)
    answer, how = idx.lookup(ex.request)
    assert how == "exact" and answer["choices"][0]["message"] == ex.response["choices"][0]["message"]
    with pytest.raises(ValueError, match="unknown replay source"):
        ReplayIndex.from_source("nowhere")


def test_replay_cli_bad_source_is_one_line():
    from click.testing import CliRunner

    from protege.cli.main import cli

    res = CliRunner().invoke(cli, ["teacher", "replay", "--from", "nowhere"])
    assert res.exit_code == 2 and "unknown replay source" in res.output and "Traceback" not in res.output
