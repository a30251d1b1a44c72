"""Schema-constrained decoding: the grammar accepts exactly the trained answer
format, and a model that knows nothing writes only schema-valid calls under it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from protege.evaluate.metrics import schema_valid, tool_calls_of
from protege.models import grammar as G
from protege.models.toolcall import render_completion

TOOLS = [
    {"type": "function", "function": {
        "name": "set_speed", "description": "Set the cruise speed.",
        "parameters": {"type": "object", "properties": {
            "speed": {"type": "integer", "description": "km/h"},
            "unit": {"type": "string", "enum": ["kmh", "mph"]},
            "lanes": {"type": "array", "items": {"type": "string"}},
        }, "required": ["speed", "unit"]}}},
    {"type": "function", "function": {"name": "honk", "parameters": {"type": "object", "properties": {}}}},
]


# For generation by a random model: no free strings or numbers, whose length
# only a trained model would bound.
GEN_TOOLS = [
    {"type": "function", "function": {"name": "set_mode", "parameters": {"type": "object", "properties": {
        "mode": {"type": "string", "enum": ["eco", "sport"]}, "on": {"type": "boolean"}},
        "required": ["mode", "on"]}}},
    {"type": "function", "function": {"name": "honk", "parameters": {"type": "object", "properties": {}}}},
]


def _call(name: str, args: dict) -> dict:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from protege.models.tiny import build_tiny

    path = build_tiny(tmp_path_factory.mktemp("tiny"), hidden_size=32, layers=1)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _matcher(tok, grammar: str):
    import llguidance

    return llguidance.LLMatcher(G.ll_tokenizer(tok), G.compile_grammar(grammar))


@pytest.mark.parametrize("message", [
    {"role": "assistant", "content": None, "tool_calls": [_call("set_speed", {"speed": 90, "unit": "kmh"})]},
    {"role": "assistant", "content": "Two things.", "tool_calls": [
        _call("set_speed", {"speed": 50, "unit": "mph", "lanes": ["left"]}), _call("honk", {})]},
    {"role": "assistant", "content": "Done. I ran `honk`.", "tool_calls": None},
])
def test_trained_answers_are_accepted_token_for_token(tiny, message: dict) -> None:
    _, tok = tiny
    m = _matcher(tok, G.answer_grammar(TOOLS))
    ids = tok(render_completion(message), add_special_tokens=False)["input_ids"] + [G.stop_token_id(tok)]
    assert m.consume_tokens(ids), m.get_error()
    assert m.is_stopped() and not m.is_error()


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "drive", "arguments": {}}\n</tool_call>',  # not an offered tool
    '<tool_call>\n{"name": "set_speed", "arguments": {"speed": "fast", "unit": "kmh"}}\n</tool_call>',  # type
    '<tool_call>\n{"name": "set_speed", "arguments": {"speed": 5, "unit": "knots"}}\n</tool_call>',  # enum
    '<tool_call>\n{"name": "set_speed", "arguments": {"speed": 5}}\n</tool_call>',  # required
    'Sure <tool_call>\n{"name": "honk", "arguments": {"loud": true}}\n</tool_call>',  # extra property
])
def test_invalid_calls_are_refused(tiny, text: str) -> None:
    _, tok = tiny
    m = _matcher(tok, G.answer_grammar(TOOLS))
    ids = tok(text, add_special_tokens=False)["input_ids"] + [G.stop_token_id(tok)]
    assert not m.consume_tokens(ids) or not m.is_stopped()


def test_tool_choice_and_response_format_shape_the_grammar() -> None:
    assert G.answer_grammar(None) is None
    assert G.answer_grammar(TOOLS, tool_choice="none") is None
    required = G.answer_grammar(TOOLS, tool_choice="required")
    assert required.startswith("start: calls")
    named = G.answer_grammar(TOOLS, tool_choice={"type": "function", "function": {"name": "honk"}})
    assert '"honk"' in named and '"set_speed"' not in named
    single = G.answer_grammar(TOOLS, parallel_tool_calls=False)
    assert "calls: call\n" in single
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}
    assert '"ok"' in G.answer_grammar(None, response_format=fmt)
    # Descriptions are not part of validity: they are left out of the grammar.
    assert "km/h" not in G.answer_grammar(TOOLS)


def test_an_uncompilable_schema_falls_back_to_the_names_constraint() -> None:
    bad = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "no-such-type"}}}}}]
    before = G.stats["fallback"]
    assert G.compile_grammar(G.answer_grammar(bad)) is None
    assert G.stats["fallback"] == before + 1


def _generate(tiny, rows: list[dict], mode: str) -> list[dict]:
    from protege.evaluate.predictors import TransformersPredictor

    model, tok = tiny
    p = TransformersPredictor("s", model, tok, batch_size=3, max_new_tokens=64, constrain=mode)
    return p.predict(rows)


def test_an_untrained_model_writes_only_valid_calls_under_the_schema(tiny) -> None:
    """A random tiny model knows no JSON: unconstrained, or with names only, it
    writes invalid calls; with the schema every call it writes is valid and
    ``tool_choice`` is obeyed."""
    rows = [{"messages": [{"role": "user", "content": f"go {i}"}], "tools": GEN_TOOLS, "tool_choice": "required",
             "parallel_tool_calls": False} for i in range(6)]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in GEN_TOOLS}

    def valid(msg: dict) -> bool:
        calls = tool_calls_of(msg)
        return bool(calls) and all(c.args is not None and c.name in schemas and schema_valid(c.args, schemas[c.name])
                                   for c in calls)

    free = _generate(tiny, rows, "names")
    constrained = _generate(tiny, rows, "schema")
    assert sum(map(valid, free)) < len(rows)
    assert all(valid(m) for m in constrained), constrained
    forced = _generate(tiny, [{**rows[0], "tool_choice": {"type": "function", "function": {"name": "honk"}}}],
                       "schema")
    assert [c.name for c in tool_calls_of(forced[0])] and {c.name for c in tool_calls_of(forced[0])} == {"honk"}


def test_response_format_is_enforced(tiny) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
        "additionalProperties": False}}}
    out = _generate(tiny, [{"messages": [{"role": "user", "content": "status?"}], "response_format": fmt}], "schema")
    assert isinstance(json.loads(out[0]["content"])["ok"], bool)


def test_grammar_module_needs_no_model(tmp_path: Path) -> None:
    # The grammar text is plain data: building it must not import torch.
    import subprocess
    import sys

    code = ("import sys; from protege.models.grammar import answer_grammar; answer_grammar([]); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0


# -- verification: evaluation confirms a student's greedy answer against the
# teacher's draft in one forward pass instead of generating it. The answers and
# their confidence must be exactly what generation gives, and a draft the
# student would not write must never be confirmed.


def _rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"go {i} " * (i + 1)}], "tools": GEN_TOOLS,
             "tool_choice": "required", "parallel_tool_calls": False} for i in range(n)]


def _predictor(tiny, verify: bool):
    from protege.evaluate.predictors import TransformersPredictor

    model, tok = tiny
    return TransformersPredictor("s", model, tok, batch_size=3, max_new_tokens=64, verify=verify)


def _until_stop(p, ids: list[int]) -> list[int]:
    stops = p._stops()
    return ids[: next(k for k, t in enumerate(ids) if t in stops) + 1]


def _same_signals(a: dict | None, b: dict | None) -> bool:
    return a is not None and b is not None and all(abs(a[k] - b[k]) < 1e-4 for k in a)


def test_the_students_own_answers_are_confirmed_exactly(tiny) -> None:
    rows = _rows(5)
    gen = _predictor(tiny, verify=False)
    answers = gen.predict(rows)
    drafts = [_until_stop(gen, ids) for ids in gen.answer_ids]
    ver = _predictor(tiny, verify=True)
    prompts = [ver._prompt(r) for r in rows]
    done = ver.verify_drafts(rows, prompts, drafts)
    assert sorted(done) == list(range(len(rows)))
    for i, (message, signals) in done.items():
        assert message == answers[i]
        assert _same_signals(signals, gen.signals[i])


def test_a_draft_the_student_would_not_write_is_not_confirmed(tiny) -> None:
    rows = _rows(3)
    gen = _predictor(tiny, verify=False)
    gen.predict(rows)
    drafts = [_until_stop(gen, ids) for ids in gen.answer_ids]
    ver = _predictor(tiny, verify=True)
    prompts = [ver._prompt(r) for r in rows]
    wrong = [list(d) for d in drafts]
    k = len(wrong[1]) // 2
    wrong[1][k] = next(t for t in range(len(tiny[1])) if t != wrong[1][k] and t not in gen._stops())
    wrong[2] = wrong[2][:-1]  # no end of turn: generation would go on
    assert sorted(ver.verify_drafts(rows, prompts, wrong)) == [0]


def test_calls_of_one_conversation_are_confirmed_in_one_pass(tiny) -> None:
    rows = _rows(2)
    gen = _predictor(tiny, verify=False)
    gen.predict(rows[:1])
    first = _until_stop(gen, gen.answer_ids[0])
    _, tok = tiny
    p1 = tok(gen._prompt(rows[0]), add_special_tokens=False)["input_ids"]
    # The second call's prompt carries the first call and its answer, as an agent's history does.
    p2 = p1 + first + tok("<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n",
                          add_special_tokens=False)["input_ids"]
    ver = _predictor(tiny, verify=True)
    done = ver.verify_drafts([rows[0], rows[0]], [p1, p2], [first, first])
    assert 0 in done and ver.stats["verify_passes"] == 1
    assert done[0][0] == gen.predict(rows[:1])[0]


def test_predict_gives_what_generation_gives(tiny) -> None:
    rows = _rows(6)
    gen = _predictor(tiny, verify=False)
    answers = gen.predict(rows)
    # The teacher agreed with the student on every other row.
    for i, row in enumerate(rows):
        row["completion"] = answers[i] if i % 2 == 0 else {"role": "assistant", "content": "no"}
    ver = _predictor(tiny, verify=True)
    assert ver.predict(rows) == answers
    assert all(_same_signals(a, b) for a, b in zip(ver.signals, gen.signals, strict=True))
    assert ver.stats["calls"] == len(rows)
    assert ver.stats["verified"] <= 3


# --------------------------------------------------------------------------- judged confidence
# A tool-call task's metric judges a call on every token but a text answer only
# on the choice not to call: the judged signals weigh exactly that.


def test_judged_signals_weigh_a_text_answer_by_its_choice_not_to_call() -> None:
    from protege.models.confidence import judged, opens_call

    plain = {"min_prob": 0.2, "mean_logprob": -0.9, "min_margin": 0.1}
    text = judged(plain, True, 0.01)
    assert text["judged_min_prob"] == pytest.approx(0.99) and text["min_prob"] == 0.2
    assert text["judged_mean_logprob"] == pytest.approx(math.log(0.99))
    for kind, p_call in ((False, 0.99), (True, None), (None, 0.01)):  # a call; no tools offered; unknown
        same = judged(plain, kind, p_call)
        assert (same["judged_min_prob"], same["judged_mean_logprob"]) == (0.2, -0.9)
    assert all(opens_call(p) for p in ("<", "<tool", "<tool_call>", "<tool_call>\n"))
    assert not any(opens_call(p) for p in ("", "<b", "I", " <tool"))


def test_the_recorded_chance_of_a_call_is_the_models_at_the_first_step(tiny) -> None:
    import torch

    from protege.models.confidence import call_openers, step_recorder

    model, tok = tiny
    openers = call_openers(tok)
    assert tok("<tool_call>", add_special_tokens=False)["input_ids"][0] in openers
    assert all(opens_call_piece(tok, i) for i in openers)
    ids = tok(["hello there", "go"], return_tensors="pt", padding=True)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[:, -1].float()
    rec = step_recorder(openers, [True, None])
    rec(ids, logits.clone())
    want = torch.softmax(logits, dim=-1)[0, list(openers)].sum()
    text = rec.signals(0, 1, text=True)
    assert text["judged_min_prob"] == pytest.approx(1 - float(want), abs=1e-6)
    # The second row offered no tools: its text is judged whole, as a text task's is.
    assert rec.signals(1, 1, text=True)["judged_min_prob"] == rec.signals(1, 1, text=True)["min_prob"]
    # Tools offered but calls forbidden: writing text was the only choice.
    never = step_recorder(openers, [False, False])
    never(ids, logits.clone())
    assert never.signals(0, 1, text=True)["judged_min_prob"] == 1.0


def opens_call_piece(tok, i: int) -> bool:
    from protege.models.confidence import opens_call

    return opens_call(tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)]))


def test_a_text_answer_where_calls_are_forbidden_is_sure_of_its_choice(tiny) -> None:
    rows = [{"messages": [{"role": "user", "content": "say hi"}], "tools": GEN_TOOLS, "tool_choice": "none"}]
    p = _predictor(tiny, verify=False)
    (answer,) = p.predict(rows)
    assert not answer.get("tool_calls")
    assert p.signals[0]["judged_min_prob"] == pytest.approx(1.0)
    assert p.signals[0]["min_prob"] < 1.0
