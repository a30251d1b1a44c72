from __future__ import annotations

import json

import pytest
from _smol import smol_tokenizer

from protege.models.toolcall import (
    answer_suffix,
    build_prompt,
    parse_completion,
    render_answer,
    render_completion,
    strip_prefix,
    supports_tools,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
SYSTEM = "You are the travel desk of Acme. Answer with tool calls when you can."


def _call(name: str, args: dict, id_: str = "call_x") -> dict:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


@pytest.fixture(scope="module")
def tok():
    return smol_tokenizer()


def _semantic(msg: dict) -> tuple:
    calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or []
    ]
    return msg.get("content") or None, calls


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": None, "tool_calls": [_call("get_weather", {"city": "Paris"})]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                _call("get_weather", {"city": "Paris"}, "a"),
                _call("get_weather", {"city": "Zürich"}, "b"),
                _call("get_time", {"tz": "Europe/Paris"}, "c"),
            ],
        },
        {"role": "assistant", "content": "It is sunny in Paris.", "tool_calls": None},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [_call("get_time", {})]},
        {"role": "assistant", "content": '{"label": "refund", "confidence": 0.9}'},
    ],
    ids=["single", "parallel", "no-call", "content+call", "json-content"],
)
def test_render_parse_round_trip(message: dict) -> None:
    text = render_completion(message)
    parsed = parse_completion(text)
    assert parsed["role"] == "assistant"
    assert _semantic(parsed) == _semantic(message)
    for call in parsed["tool_calls"] or []:
        assert call["type"] == "function" and call["id"].startswith("call_")
        assert isinstance(call["function"]["arguments"], str)


def test_parallel_calls_are_separate_blocks() -> None:
    text = render_completion(
        {"role": "assistant", "tool_calls": [_call("get_weather", {"city": "A"}), _call("get_time", {})]}
    )
    assert text.count("<tool_call>") == 2 and text.count("</tool_call>") == 2


def test_parse_tolerates_whitespace_junk_and_missing_close() -> None:
    text = '  <tool_call>   {"name": "get_weather", "arguments": {"city": "Oslo"}}  </tool_call>\n\n<|im_end|>garbage'
    assert _semantic(parse_completion(text)) == (None, [("get_weather", {"city": "Oslo"})])
    # generation stopped at EOS before the closing tag
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'
    assert _semantic(parse_completion(text)) == (None, [("get_weather", {"city": "Oslo"})])
    # trailing junk after the JSON object inside the block
    text = '<tool_call>\n{"name": "get_time", "arguments": {}} }}]\n</tool_call>'
    assert _semantic(parse_completion(text)) == (None, [("get_time", {})])
    # two blocks, the second unterminated
    text = (
        '<tool_call>{"name": "get_time", "arguments": {"tz": "UTC"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}'
    )
    assert _semantic(parse_completion(text))[1] == [
        ("get_time", {"tz": "UTC"}),
        ("get_weather", {"city": "Rome"}),
    ]


def test_broken_block_stays_visible_in_content() -> None:
    parsed = parse_completion('<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>')
    assert parsed["tool_calls"] is None
    assert "<tool_call>" in parsed["content"]


def test_call_ids_are_distinct_for_repeated_calls() -> None:
    text = render_completion(
        {"role": "assistant", "tool_calls": [_call("get_time", {}), _call("get_time", {})]}
    )
    ids = [c["id"] for c in parse_completion(text)["tool_calls"]]
    assert len(set(ids)) == 2


def test_strip_prefix_removes_static_system_and_tools() -> None:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Weather in Paris?"}]
    out, tools = strip_prefix(msgs, [WEATHER, TIME], {"system": SYSTEM, "tools": [TIME, WEATHER]})
    assert out == [{"role": "user", "content": "Weather in Paris?"}] and tools is None
    # a per-call tool survives, and so does a variable system tail
    msgs[0] = {"role": "system", "content": SYSTEM + "\nToday is Monday."}
    out, tools = strip_prefix(msgs, [WEATHER, TIME], {"system": SYSTEM, "tools": [TIME]})
    assert out[0]["content"] == "Today is Monday." and tools == [WEATHER]


def test_prompt_with_and_without_prefix(tok) -> None:
    assert not supports_tools(tok)
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Weather in Paris?"}]
    prefix = {"system": SYSTEM, "tools": [WEATHER]}
    full = build_prompt(msgs, [WEATHER], tok, prefix=prefix)
    assert SYSTEM in full and "get_weather" in full and "<tools>" in full
    assert full.endswith("<|im_start|>assistant\n")
    short = build_prompt(msgs, [WEATHER], tok, prefix=prefix, drop_prefix=True)
    assert SYSTEM not in short and "get_weather" not in short and "Weather in Paris?" in short
    ids_full = build_prompt(msgs, [WEATHER], tok, prefix=prefix, tokenize=True)
    ids_short = build_prompt(msgs, [WEATHER], tok, prefix=prefix, drop_prefix=True, tokenize=True)
    assert len(ids_short) * 2 < len(ids_full)


def test_history_with_tool_calls_and_results_renders(tok) -> None:
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [_call("get_weather", {"city": "Paris"})]},
        {"role": "tool", "tool_call_id": "call_x", "content": '{"temp": 21}'},
    ]
    text = build_prompt(msgs, [WEATHER], tok)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert '<tool_response>\n{"temp": 21}\n</tool_response>' in text


def test_training_target_ends_with_end_of_turn(tok) -> None:
    assert answer_suffix(tok) == "<|im_end|>"
    msg = {"role": "assistant", "content": None, "tool_calls": [_call("get_weather", {"city": "Paris"})]}
    target = render_answer(msg, tok)
    assert target.endswith("</tool_call><|im_end|>")
    # what the student generates, decoded with special tokens, parses back
    ids = tok(target, add_special_tokens=False)["input_ids"]
    assert _semantic(parse_completion(tok.decode(ids))) == _semantic(msg)


def test_tokenizer_without_template_falls_back_to_chatml(tok) -> None:
    import copy

    bare = copy.deepcopy(tok)
    bare.chat_template = None
    text = build_prompt([{"role": "user", "content": "hi"}], None, bare)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_pruned_prompt_keeps_per_call_tools_compactly(tok) -> None:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Time in Rome?"}]
    prefix = {"system": SYSTEM, "tools": [WEATHER]}
    full = build_prompt(msgs, [WEATHER, TIME], tok, prefix=prefix)
    short = build_prompt(msgs, [WEATHER, TIME], tok, prefix=prefix, drop_prefix=True)
    assert "get_weather" not in short and "You may call" not in short and SYSTEM not in short
    assert '<tools>\n{"name":"get_time","parameters":{"type":"object"' in short
    assert len(tok(short)["input_ids"]) * 3 < len(tok(full)["input_ids"])


def test_a_call_that_lacks_a_shared_tool_says_so_in_the_pruned_prompt(tok) -> None:
    """An agent that hides a tool for a while (BFCL's missing-function turns):
    the prefix keeps every tool, and a pruned prompt names the ones missing."""
    from protege.datasets import detect_prefix

    tools = [{"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object"}}}
             for i in range(5)]
    user = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "go"}]
    rows = [{"messages": user, "tools": tools}] * 3 + [{"messages": user, "tools": tools[:4]}]
    prefix = detect_prefix(rows)
    assert prefix["tools_union"] and [t["function"]["name"] for t in prefix["tools"]] == ["t0", "t1", "t2", "t3", "t4"]
    whole = build_prompt(user, tools, tok, prefix=prefix, drop_prefix=True)
    lacking = build_prompt(user, tools[:4], tok, prefix=prefix, drop_prefix=True)
    assert "unavailable" not in whole and "<tools>" not in whole
    assert "<unavailable>t4</unavailable>" in lacking and "<tools>" not in lacking
    # Tool lists that differ a lot keep only what every row shares.
    far = detect_prefix([{"messages": user, "tools": tools}, {"messages": user, "tools": tools[:2]}])
    assert not far["tools_union"] and [t["function"]["name"] for t in far["tools"]] == ["t0", "t1"]


def test_a_few_calls_of_another_site_do_not_erase_the_prefix(tok) -> None:
    from protege.datasets import detect_prefix

    tools = [{"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object"}}}
             for i in range(3)]
    other = {"type": "function", "function": {"name": "solo", "parameters": {"type": "object"}}}
    site = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "go"}]
    stray = [{"role": "system", "content": "Something else."}, {"role": "user", "content": "x"}]
    rows = [{"messages": site, "tools": tools}] * 40 + [{"messages": stray, "tools": [other]}]
    prefix = detect_prefix(rows)
    assert prefix["system"] == SYSTEM and len(prefix["tools"]) == 3
    # The stray call keeps its own system prompt and tool in full.
    text = build_prompt(stray, [other], tok, prefix=prefix, drop_prefix=True)
    assert "Something else." in text and "solo" in text
