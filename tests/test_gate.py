from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from protege.evaluate import EvalConfig, FunctionPredictor, evaluate_task, gate
from protege.evaluate.gate import default_min_examples, list_decisions
from protege.evaluate.runner import TaskData
from protege.registry import Registry


def label_task(
    n: int, wrong_every: int | None, invalid_every: int | None = None
) -> tuple[TaskData, FunctionPredictor]:
    rows = [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": f"m{i}"}],
            "tools": None,
            "completion": {"role": "assistant", "content": "spam" if i % 2 else "ham"},
        }
        for i in range(n)
    ]
    index = {r["id"]: i for i, r in enumerate(rows)}

    def answer(row):
        i = index[row["id"]]
        if invalid_every and i % invalid_every == 0:
            return {"role": "assistant", "content": ""}
        if wrong_every and i % wrong_every == 0:
            return {"role": "assistant", "content": "ham" if i % 2 else "spam"}
        return dict(row["completion"])

    return TaskData({"output_type": "label", "version": "v1", "hash": "h"}, [], rows), FunctionPredictor(
        "student", answer
    )


def evaluated(store, task, n, wrong_every, invalid_every=None):
    rec = Registry(store).register(task, base_model="tiny", path="/nonexistent")
    data, student = label_task(n, wrong_every, invalid_every)
    report = evaluate_task(
        store,
        task,
        adapter=rec.id,
        predictors={"student": student},
        data=data,
        baselines=False,
        config=EvalConfig(n_resamples=400),
    )
    return rec, report


def test_default_minimum_is_the_rule_of_three():
    assert default_min_examples(0.95) == 60
    assert default_min_examples(0.99) == 300
    assert default_min_examples(0.5) == 30


def test_gate_passes_a_student_as_good_as_the_teacher_and_sets_shadow(store):
    rec, report = evaluated(store, "t-pass", 200, wrong_every=None)
    decision = gate(store, "t-pass", rec.id)
    assert decision.passed, [c.message for c in decision.checks]
    assert decision.evaluation_id == report.id
    assert decision.status == "shadow"
    assert Registry(store).get(rec.id).status == "shadow"
    (stored,) = list_decisions(store, "t-pass")
    assert stored["decision"] == "pass" and stored["evaluation_id"] == report.id
    assert stored["thresholds"]["min_share"] == 0.95 and stored["thresholds"]["min_test_examples"] == 60
    assert {c["name"] for c in stored["reasons"]["checks"]} == {
        "share_of_teacher",
        "validity",
        "test_examples",
        "ci_width",
    }


def test_gate_fails_on_a_low_share_and_says_by_how_much(store):
    rec, report = evaluated(store, "t-share", 200, wrong_every=10)  # 90 % of the teacher
    decision = gate(store, "t-share", rec.id, to="promoted")
    assert not decision.passed
    failed = {c.name: c for c in decision.failed_checks}
    assert set(failed) == {"share_of_teacher"}
    c = failed["share_of_teacher"]
    assert c.value == pytest.approx(report.share_of_teacher.low)
    assert c.gap == pytest.approx(0.95 - report.share_of_teacher.low)
    assert "needs >= 0.950" in c.message
    assert Registry(store).get(rec.id).status == "candidate"  # untouched
    (stored,) = list_decisions(store, "t-share", rec.id)
    assert stored["decision"] == "fail"
    reasons = {x["name"]: x for x in stored["reasons"]["checks"]}
    assert reasons["share_of_teacher"]["ok"] is False
    assert reasons["share_of_teacher"]["gap"] == pytest.approx(c.gap)
    # A lower threshold lets the same evaluation through; a version names the adapter too.
    assert gate(store, "t-share", f"v{rec.version}", min_share=0.8).passed


def test_gate_fails_on_validity_and_on_too_few_examples(store):
    rec, _ = evaluated(store, "t-valid", 200, wrong_every=None, invalid_every=50)  # 4 empty answers of 200
    d = gate(store, "t-valid", rec.id, min_share=0.5)
    assert [c.name for c in d.failed_checks] == ["validity"]
    assert d.failed_checks[0].value == pytest.approx(0.98)
    assert d.failed_checks[0].gap == pytest.approx(0.01)

    rec, _ = evaluated(store, "t-small", 20, wrong_every=None)  # perfect, but 20 examples
    d = gate(store, "t-small", rec.id)
    # The bootstrap interval is [1, 1] here: only the sample-size rule catches it.
    assert [c.name for c in d.failed_checks] == ["test_examples"]
    assert d.failed_checks[0].gap == pytest.approx(40)


def test_gate_without_an_evaluation_fails_and_is_stored(store):
    rec = Registry(store).register("t-none", base_model="tiny", path="/nonexistent")
    d = gate(store, "t-none", rec.id)
    assert not d.passed and d.failed_checks[0].name == "evaluation"
    assert list_decisions(store, "t-none")[0]["decision"] == "fail"
    with pytest.raises(ValueError):
        gate(store, "t-none", rec.id, to="live")


def test_cli_gate(db_url):
    from protege.cli.main import cli
    from protege.database import open_store

    store = open_store(db_url)
    try:
        good, _ = evaluated(store, "c-good", 120, wrong_every=None)
        bad, _ = evaluated(store, "c-bad", 120, wrong_every=5)
    finally:
        store.close()
    runner = CliRunner()
    res = runner.invoke(cli, ["gate", "c-good", "--adapter", "v1", "--db", db_url, "--to", "promoted"])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "promoted" in res.output
    res = runner.invoke(cli, ["gate", "c-bad", "--adapter", "v1", "--db", db_url, "--json"])
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["decision"] == "fail"
    assert [c["name"] for c in data["checks"] if not c["ok"]] == ["share_of_teacher"]
    res = runner.invoke(cli, ["gate", "c-bad", "--adapter", "v1", "--db", db_url])
    assert res.exit_code == 1 and "short by" in res.output
    store = open_store(db_url)
    try:
        assert Registry(store).get(good.id).status == "promoted"
        assert len(list_decisions(store, "c-bad")) == 2
    finally:
        store.close()


def _selective(n: int, sure_right: int, unsure_wrong_every: int = 2) -> dict:
    """``sure_right`` confident answers, all right; below them, less sure
    answers of which every ``unsure_wrong_every``-th is wrong."""
    conf, st = [], []
    for i in range(n):
        if i < sure_right:
            conf.append(0.99 - i * 1e-4)
            st.append(1.0)
        else:
            conf.append(0.5 - i * 1e-4)
            st.append(0.0 if i % unsure_wrong_every == 0 else 1.0)
    return {"basis": "reference", "confidence": conf, "student": st, "teacher": [1.0] * n, "valid": [1.0] * n}


def test_choose_floor_serves_the_sure_answers_and_stops_at_the_first_failure():
    from protege.evaluate.gate import GateThresholds, choose_floor

    t = GateThresholds(min_test_examples=30)
    floor, curve = choose_floor(_selective(100, 70, unsure_wrong_every=1), t)
    assert floor is not None
    # The 70 sure answers and one miss: one error in 71 still bounds the share
    # above 0.95 by the bootstrap; the second miss ends the scan.
    assert floor.served == 71 and floor.min_confidence == pytest.approx(0.5 - 70e-4)
    assert floor.share.low >= 0.95 and floor.coverage == pytest.approx(0.71)
    assert curve[0]["coverage"] == 0.01 and len(curve) >= 70
    # Too few sure answers to show anything: no floor.
    assert choose_floor(_selective(100, 10), t)[0] is None
    # The evidence rule counts served answers, not the test split.
    assert choose_floor(_selective(100, 70), GateThresholds(min_test_examples=80))[0] is None


def test_gate_passes_with_a_confidence_floor_and_records_it(store):
    rec, report = evaluated(store, "t-floor", 100, wrong_every=2)
    assert gate(store, "t-floor", rec.id, min_test_examples=30).decision == "fail"  # no confidences recorded
    report.selective = _selective(100, 60, unsure_wrong_every=1)
    report.id = None
    from protege.evaluate.records import save_report

    save_report(store, report)
    decision = gate(store, "t-floor", rec.id, min_test_examples=30)
    assert decision.passed, [c.message for c in decision.checks]
    assert decision.floor is not None and decision.floor.served == 61
    assert "coverage" in {c.name for c in decision.checks}
    serving = Registry(store).get(rec.id).metrics["serving"]
    assert serving["min_confidence"] == pytest.approx(decision.floor.min_confidence)
    assert serving["coverage"] == pytest.approx(0.61) and serving["gate_decision"] == decision.id
    (stored, *_) = list_decisions(store, "t-floor")
    assert stored["reasons"]["floor"]["served"] == 61 and stored["reasons"]["floor_curve"]
    # A floor that serves less than min_coverage does not pass.
    low = gate(store, "t-floor", rec.id, min_test_examples=30, min_coverage=0.8)
    assert not low.passed and "coverage" in {c.name for c in low.failed_checks}
    # Off: all or nothing, as before.
    assert not gate(store, "t-floor", rec.id, min_test_examples=30, confidence_floor=False).passed


def _two_signals(n: int, sure_right: int, seed: int) -> tuple[dict[str, list], list[float]]:
    """Signal ``good`` puts the ``sure_right`` right answers first; ``bad`` is noise."""
    import random

    rng = random.Random(seed)
    st = [1.0] * sure_right + [float(i % 2) for i in range(n - sure_right)]
    good = [0.99 - i * 1e-3 if i < sure_right else 0.5 - i * 1e-4 for i in range(n)]
    bad = [rng.random() for _ in range(n)]
    return {"good": good, "bad": bad, "min_prob": bad}, st


def test_validated_floor_is_chosen_on_validation_and_judged_on_test(store):
    from protege.evaluate.gate import GateThresholds, choose_validated_floor

    vsig, vst = _two_signals(50, 30, seed=1)
    tsig, tst = _two_signals(200, 140, seed=2)
    selective = {
        "basis": "reference", "confidence": tsig["min_prob"], "signals": tsig, "student": tst,
        "teacher": [1.0] * 200, "valid": [1.0] * 200,
        "validation": {"signals": vsig, "student": vst, "teacher": [1.0] * 50, "n": 50},
    }
    floor, table = choose_validated_floor(selective, GateThresholds())
    assert floor is not None and floor.signal == "good" and floor.chosen_on == "validation"
    # The cut is the validation's (its 30 sure answers end at 0.99 - 29e-3), a
    # value, not a count: on the test split it serves the 30 answers at or
    # above it, although 140 there are right and sure.
    assert floor.min_confidence == pytest.approx(0.99 - 29e-3)
    assert floor.served == 30 and floor.share.value == 1.0
    chosen = [r for r in table if r.get("chosen")]
    assert [r["signal"] for r in chosen] == ["good"]
    # Judged on test: answers there below the validation's cut are not served
    # even where they are right.
    rec, report = evaluated(store, "t-val", 200, wrong_every=2)
    report.selective = selective
    report.id = None
    from protege.evaluate.records import save_report

    save_report(store, report)
    decision = gate(store, "t-val", rec.id)
    assert not decision.passed  # 30 served answers < the rule of three's 60
    assert "test_examples" in {c.name for c in decision.failed_checks}
    tsig["good"] = [0.99 - i * 1e-4 if i < 140 else 0.5 - i * 1e-4 for i in range(200)]
    report.id = None
    save_report(store, report)
    decision = gate(store, "t-val", rec.id)
    assert decision.passed, [c.message for c in decision.checks]
    assert decision.floor.served == 140 and decision.floor.signal == "good"
    serving = Registry(store).get(rec.id).metrics["serving"]
    assert serving["signal"] == "good" and serving["min_confidence"] == pytest.approx(0.99 - 29e-3)


def test_no_validated_floor_when_the_surest_validation_answer_is_wrong():
    from protege.evaluate.gate import GateThresholds, choose_validated_floor

    sel = {"confidence": [0.9, 0.8], "student": [1.0, 1.0], "teacher": [1.0, 1.0], "valid": [1.0, 1.0],
           "validation": {"confidence": [0.9, 0.2], "student": [0.0, 1.0], "teacher": [1.0, 1.0]}}
    assert choose_validated_floor(sel, GateThresholds())[0] is None
