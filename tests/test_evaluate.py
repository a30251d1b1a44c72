from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from protege.database import open_store
from protege.evaluate import EvalConfig, FunctionPredictor, evaluate_task, load_report
from protege.evaluate.bfcl_check import bfcl_rows, checker_status, cross_check
from protege.evaluate.cost import CostConfig
from protege.evaluate.runner import TaskData
from protege.store import Trace

TASK = "bfcl-simple"


def write_dataset(home: Path, task: str, rows: list[dict], train: list[dict], output_type: str) -> Path:
    path = home / "artifacts" / "datasets" / task / "v1"
    path.mkdir(parents=True)
    manifest = {
        "task_id": task,
        "version": "v1",
        "hash": "h-" + task,
        "created_at": 0,
        "output_type": output_type,
        "prefix": {"system": None, "tools": None},
        "counts": {"train": len(train), "validation": 0, "test": len(rows)},
        "seed": 0,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    for name, split in (("train", train), ("validation", []), ("test", rows)):
        (path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    return path


def no_call(row):
    return {"role": "assistant", "content": "I can't do that.", "tool_calls": None}


def drop_every_tenth(rows):
    index = {r["id"]: i for i, r in enumerate(rows)}

    def fn(row):
        return no_call(row) if index[row["id"]] % 10 == 0 else copy.deepcopy(row["completion"])

    return fn


@pytest.fixture
def bfcl_task(_isolated_home: Path):
    rows = bfcl_rows("simple_python", 40)
    train = bfcl_rows("simple_python", 45)[40:]
    write_dataset(_isolated_home, TASK, rows, train, "tool_call")
    store = open_store(f"sqlite:///{_isolated_home / 'p.db'}")
    store.add_traces(
        Trace(
            id=r["id"],
            request={"messages": r["messages"], "tools": r["tools"]},
            response={"choices": [{"message": r["completion"]}]},
            model="gpt-4o",
            cost_usd=0.002,
            latency_ms=800.0,
            task_id=TASK,
        )
        for r in rows
    )
    yield store, rows
    store.close()


def test_runner_with_fake_predictors_on_a_dataset_on_disk(bfcl_task):
    store, rows = bfcl_task
    predictors = {
        "student": FunctionPredictor("student", drop_every_tenth(rows)),
        "base_zero_shot": FunctionPredictor("base_zero_shot", no_call),
        "base_few_shot": FunctionPredictor("base_few_shot", lambda r: copy.deepcopy(r["completion"])),
    }
    config = EvalConfig(n_resamples=300, seed=1, cost=CostConfig(device_usd_per_hour=1.0))
    report = evaluate_task(store, TASK, adapter="v1", predictors=predictors, config=config)

    assert report.output_type == "tool_call" and report.primary_metric == "exact_call_match"
    assert report.n_examples == 40 and report.dataset_hash == "h-" + TASK
    student = report.systems["student"].metrics
    assert student["exact_call_match"].value == pytest.approx(36 / 40)
    assert student["exact_call_match"].low < 0.9 < student["exact_call_match"].high
    assert student["schema_validity"].value == 1.0  # an abstention is a valid answer
    assert student["call_recall"].value == pytest.approx(36 / 40)
    assert report.systems["base_zero_shot"].metrics["exact_call_match"].value == 0.0
    assert report.systems["base_few_shot"].metrics["exact_call_match"].value == 1.0
    assert report.systems["teacher"].metrics["exact_call_match"].value == 1.0

    # BFCL traces carry ground truth: everyone gets a "vs ground truth" column,
    # and the share of teacher quality is taken on it.
    teacher_gt = report.systems["teacher"].vs_ground_truth["exact_call_match"].value
    student_gt = report.systems["student"].vs_ground_truth["exact_call_match"].value
    assert teacher_gt == 1.0 and student_gt == pytest.approx(36 / 40)
    assert report.share_basis == "ground_truth"
    share = report.share_of_teacher
    assert share.value == pytest.approx(student_gt / teacher_gt)
    assert share.low <= share.value <= share.high < 1.0 + 1e-9

    # Cost: teacher from the traces' recorded cost, student from $/hour x seconds.
    assert report.cost["teacher_per_1k"] == pytest.approx(2.0)
    assert report.cost["teacher_source"] == "recorded"
    s = report.systems["student"]
    assert s.seconds_per_call is not None and s.seconds_per_call > 0
    assert s.latency_ms is not None and s.latency_ms >= 0
    assert report.systems["teacher"].latency_ms == pytest.approx(800.0)
    assert report.cost["student_per_1k"] == pytest.approx(1.0 / 3600 * s.seconds_per_call * 1000)
    assert report.cost["saving"] == pytest.approx(1 - report.cost["student_per_1k"] / 2.0)
    assert report.systems["teacher"].seconds_per_call == pytest.approx(0.8)

    # Stored, and reads back the same.
    loaded = load_report(store, task_id=TASK)
    assert loaded is not None and loaded.id == report.id
    assert loaded.share_of_teacher.low == pytest.approx(share.low, abs=1e-6)
    assert loaded.systems["student"].metrics["exact_call_match"].value == pytest.approx(0.9)


def test_every_answer_is_kept_and_the_misses_are_listed(bfcl_task):
    from protege.cli.main import cli
    from protege.evaluate.answers import read_answers

    store, rows = bfcl_task
    preds = {"student": FunctionPredictor("student", drop_every_tenth(rows))}
    report = evaluate_task(store, TASK, predictors=preds, baselines=False, config=EvalConfig(n_resamples=50))
    kept = read_answers(report.answers_path)
    assert len(kept) == 40 and report.answers_path.endswith(f"{report.id}.answers.jsonl")
    wrong = [a for a in kept if a["student_right"] < 1]
    assert [a["example"] for a in wrong] == [rows[i]["id"] for i in range(0, 40, 10)]
    assert all(a["student"] == {"content": "I can't do that."} for a in wrong)
    first = kept[1]
    assert first["teacher_right"] == 1.0 and first["student"] == first["reference"]
    assert first["reference"]["tool_calls"][0]["name"] == rows[1]["completion"]["tool_calls"][0]["function"]["name"]
    assert first["turn"]["role"] == "user" and first["turn"]["content"]

    url = f"sqlite:///{Path(report.answers_path).parents[3] / 'p.db'}"
    res = CliRunner().invoke(cli, ["answers", TASK, "--db", url, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["evaluation"] == report.id and out["answers"] == 40
    assert sorted(a["example"] for a in out["shown"]) == sorted(a["example"] for a in wrong)
    res = CliRunner().invoke(cli, ["answers", TASK, "--db", url, "--all", "--limit", "3", "--json"])
    assert len(json.loads(res.output)["shown"]) == 3
    res = CliRunner().invoke(cli, ["answers", "no-such-task", "--db", url])
    assert res.exit_code != 0 and "no evaluation of 'no-such-task'" in res.output


def test_intervals_are_deterministic_with_a_seed(bfcl_task):
    store, rows = bfcl_task
    preds = {"student": FunctionPredictor("student", drop_every_tenth(rows))}

    def run(seed):
        cfg = EvalConfig(n_resamples=200, seed=seed, store_result=False)
        rep = evaluate_task(store, TASK, predictors=preds, baselines=False, config=cfg)
        return rep.share_of_teacher, rep.to_dict()["systems"]["student"]["metrics"]  # NaN -> None

    assert run(3) == run(3)
    # Another seed draws other resamples (the percentiles of a 40-example
    # metric may still land on the same grid points).
    from protege.evaluate.bootstrap import Resampler

    assert not (Resampler(40, 200, 3).weights() == Resampler(40, 200, 4).weights()).all()


def test_sample_takes_a_seeded_subset(bfcl_task):
    store, rows = bfcl_task
    preds = {"student": FunctionPredictor("student", lambda r: copy.deepcopy(r["completion"]))}
    cfg = EvalConfig(n_resamples=50, sample=7, store_result=False)
    report = evaluate_task(store, TASK, predictors=preds, baselines=False, config=cfg)
    assert report.n_examples == 7
    assert set(report.systems) == {"student", "teacher"}


@pytest.mark.skipif(checker_status() is not None, reason=f"BFCL checker unavailable: {checker_status()}")
def test_bfcl_checker_agrees_with_exact_call_match_on_bfcl_examples():
    """On real BFCL examples, with answers that are right (first or another
    acceptable value, calls reordered), wrong, or off only in ways the two
    checkers treat differently, the BFCL AST checker and protege's ground-truth
    exact match agree, and every disagreement is explained."""
    rows = bfcl_rows("simple_python", 12) + bfcl_rows("parallel", 6) + bfcl_rows("multiple", 6)
    rows += bfcl_rows("irrelevance", 4)
    preds = []
    for i, r in enumerate(rows):
        p = copy.deepcopy(r["completion"])
        calls = p.get("tool_calls") or []
        if i % 4 == 1 and len(calls) > 1:
            p["tool_calls"] = calls[::-1]  # order of parallel calls does not matter
        elif i % 4 == 2 and calls:
            args = json.loads(calls[0]["function"]["arguments"])
            key = next(iter(args), None)
            if key is not None:
                args[key] = "definitely wrong"
            calls[0]["function"]["arguments"] = json.dumps(args)
        elif i % 4 == 3 and r["meta"]["bfcl"]["category"] == "irrelevance":
            p = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "x",
                        "type": "function",
                        "function": {"name": r["tools"][0]["function"]["name"], "arguments": "{}"},
                    }
                ],
            }
        preds.append(p)
    res = cross_check(rows, preds)
    assert res["available"] and res["compared"] == len(rows)
    assert res["agree"] == res["compared"], res["disagreements"]
    assert 0 < res["bfcl_accuracy"] < 1

    # Ground truth is matched by BFCL's own rules: a string that differs only
    # in case and punctuation is right for both, "10" for an integer wrong for both.
    row = next(r for r in rows if r["id"] == "simple_python_0")
    row = copy.deepcopy(row)
    gt = row["meta"]["bfcl"]["ground_truth"][0]["calculate_triangle_area"]
    gt["unit"] = ["square units"]
    args = {"base": 10, "height": 5, "unit": "Square-Units"}
    pred = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "a",
                "type": "function",
                "function": {"name": "calculate_triangle_area", "arguments": json.dumps(args)},
            }
        ],
    }
    res = cross_check([row], [pred])
    assert res["agree"] == 1 and res["protege_accuracy"] == 1.0
    pred["tool_calls"][0]["function"]["arguments"] = json.dumps({"base": "10", "height": 5})
    res = cross_check(bfcl_rows("simple_python", 1), [pred])
    assert res["agree"] == 1 and res["protege_accuracy"] == 0.0

    # BFCL pairs parallel calls greedily: a right answer in an unlucky order fails there.
    (row,) = [r for r in bfcl_rows("parallel", 179) if r["id"] == "parallel_178"]
    order = [
        ("Apple", "2022-02-01"),
        ("Apple", "2022-01-01"),
        ("Microsoft", "2022-02-01"),
        ("Microsoft", "2022-01-01"),
    ]
    calls = [
        {
            "id": str(i),
            "type": "function",
            "function": {
                "name": "get_stock_price",
                "arguments": json.dumps({"company_name": c, "date": d, "exchange": "NASDAQ"}),
            },
        }
        for i, (c, d) in enumerate(order)
    ]
    (d,) = cross_check([row], [{"role": "assistant", "content": None, "tool_calls": calls}])["disagreements"]
    assert d["protege"] is True and d["bfcl"] is False and "greedily" in d["explanation"]


def test_runner_with_bfcl_checker_reports_agreement(bfcl_task):
    store, rows = bfcl_task
    preds = {"student": FunctionPredictor("student", drop_every_tenth(rows))}
    cfg = EvalConfig(n_resamples=50, checker="bfcl", store_result=False)
    report = evaluate_task(store, TASK, predictors=preds, baselines=False, config=cfg)
    if checker_status() is not None:
        assert report.bfcl == {"available": False, "reason": checker_status()}
        return
    assert report.bfcl["compared"] == 40 and report.bfcl["agree"] == 40
    assert report.bfcl["bfcl_accuracy"] == pytest.approx(
        report.systems["student"].vs_ground_truth["exact_call_match"].value
    )


# ----------------------------------------------------------------- other output types


def _rows(pairs, **extra):
    return [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": q}],
            "tools": None,
            "completion": {"role": "assistant", "content": a},
            **extra,
        }
        for i, (q, a) in enumerate(pairs)
    ]


def test_label_and_json_tasks(store):
    rows = _rows([(f"msg {i}", "spam" if i % 3 else "ham") for i in range(30)])
    data = TaskData({"output_type": "label", "version": "v1", "hash": "x"}, [], rows)
    student = FunctionPredictor("student", lambda r: {"role": "assistant", "content": "spam"})
    report = evaluate_task(
        store,
        "labels",
        predictors={"student": student},
        data=data,
        baselines=False,
        config=EvalConfig(n_resamples=100),
    )
    assert report.primary_metric == "accuracy"
    assert report.systems["student"].metrics["accuracy"].value == pytest.approx(20 / 30)
    assert report.share_basis == "reference"
    assert report.share_of_teacher.value == pytest.approx(20 / 30)
    assert load_report(store, task_id="labels").id == report.id  # stored on both engines

    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object", "required": ["a"]}},
    }
    rows = _rows([(f"q{i}", json.dumps({"a": i, "b": "x"})) for i in range(10)], response_format=fmt)
    data = TaskData({"output_type": "json"}, [], rows)
    student = FunctionPredictor(
        "student", lambda r: {"role": "assistant", "content": json.dumps({"a": 0, "b": "x"})}
    )
    report = evaluate_task(
        store,
        "json",
        predictors={"student": student},
        data=data,
        baselines=False,
        config=EvalConfig(n_resamples=100, store_result=False),
    )
    m = report.systems["student"].metrics
    assert report.primary_metric == "field_accuracy"
    assert m["field_accuracy"].value == pytest.approx((2 + 9 * 1) / 20)
    assert m["schema_validity"].value == 1.0


def test_text_task_with_a_fake_judge(store):
    rows = _rows([(f"say {i}", f"the answer is {i}") for i in range(12)])
    data = TaskData({"output_type": "text"}, [], rows)

    def verdict(req):
        prompt = req["messages"][-1]["content"]
        a = prompt.split("[Answer A]")[1].split("[Answer B]")[0]
        b = prompt.split("[Answer B]")[1]
        same = a.strip() == b.split("Which answer")[0].strip()
        return json.dumps({"winner": "tie" if same else ("A" if "answer" in a else "B")})

    from protege.evaluate.judge import Judge
    from protege.testing import FakeTeacher

    # Right on half the examples, a useless reply on the others.
    student = FunctionPredictor(
        "student", lambda r: r["completion"] if int(r["id"][1:]) % 2 else {"content": "no"}
    )
    report = evaluate_task(
        store,
        "text",
        predictors={"student": student},
        data=data,
        baselines=False,
        judge=Judge(FakeTeacher(verdict)),
        config=EvalConfig(n_resamples=100, embeddings=False, store_result=False),
    )
    assert report.primary_metric == "judge_score"
    m = report.systems["student"].metrics
    # ties (0.5) on half, losses (0) on the rest -> 0.25 -> /0.5 = 0.5 of the teacher
    assert m["judge_score"].value == pytest.approx(0.5)
    assert report.systems["teacher"].metrics["judge_score"].value == pytest.approx(1.0)
    assert report.share_of_teacher.value == pytest.approx(0.5)
    assert 0 < m["rouge_l"].value < 1


# ----------------------------------------------------------------- the real student path


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny Llama and a fresh LoRA adapter on it, built once for the module."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from protege.models.loader import load_base
    from protege.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    base_dir = build_tiny(root / "base")
    model, _ = load_base(str(base_dir))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adir = root / "adapter"
    peft_model.save_pretrained(adir)
    meta = {"base_model": str(base_dir), "drop_prefix": False, "config": {"max_new_tokens": 8}}
    (adir / "protege_adapter.json").write_text(json.dumps(meta))
    return base_dir, adir


@pytest.fixture
def tiny_adapter(tiny_base, _isolated_home: Path):
    """The tiny adapter registered for a task with a 4-example test split."""
    from protege.registry import Registry

    base_dir, adir = tiny_base
    rows = bfcl_rows("simple_python", 4)
    write_dataset(_isolated_home, "tiny-task", rows, bfcl_rows("simple_python", 6)[4:], "tool_call")
    store = open_store(f"sqlite:///{_isolated_home / 'p.db'}")
    rec = Registry(store).register("tiny-task", base_model=str(base_dir), path=adir)
    yield store, rec
    store.close()


def test_real_student_and_base_baselines_generate(tiny_adapter):
    store, rec = tiny_adapter
    report = evaluate_task(
        store,
        "tiny-task",
        adapter=f"v{rec.version}",
        config=EvalConfig(n_resamples=50, few_shot=1, latency_samples=2),
    )
    assert report.adapter_id == rec.id
    assert set(report.systems) == {"student", "base_zero_shot", "base_few_shot", "teacher"}
    st = report.systems["student"]
    assert st.tokens_per_s and st.tokens_per_s > 0 and st.seconds_per_call > 0
    assert report.cost["student_per_1k"] > 0
    # A fresh LoRA adapter is the identity (B = 0): greedy answers equal the base model's.
    zs = report.systems["base_zero_shot"].metrics
    for name, iv in st.metrics.items():
        assert iv.value == pytest.approx(zs[name].value, nan_ok=True), name
    # Per-example evidence for the gate's confidence floor, in test order.
    sel = report.selective
    assert sel is not None and sel["basis"] == report.share_basis
    assert len(sel["confidence"]) == len(sel["student"]) == len(sel["teacher"]) == report.n_examples
    assert all(0.0 < c <= 1.0 for c in sel["confidence"])
    assert sum(x for x in sel["student"] if x == x) / report.n_examples == pytest.approx(
        st.vs_ground_truth["exact_call_match"].value if report.share_basis == "ground_truth"
        else st.metrics["exact_call_match"].value)


def test_baselines_without_an_adapter_from_a_base_model(tiny_base, _isolated_home: Path):
    base_dir, _ = tiny_base
    store = open_store(f"sqlite:///{_isolated_home / 'p.db'}")
    write_dataset(
        _isolated_home,
        "no-adapter",
        bfcl_rows("simple_python", 3),
        bfcl_rows("simple_python", 4)[3:],
        "tool_call",
    )
    cfg = EvalConfig(n_resamples=50, base=str(base_dir), max_new_tokens=4, store_result=False)
    report = evaluate_task(store, "no-adapter", config=cfg)
    assert set(report.systems) == {"base_zero_shot", "base_few_shot", "teacher"}
    assert report.share_of_teacher is None and report.adapter_id is None
    assert report.systems["base_zero_shot"].tokens_per_s > 0
    messages = []
    report = evaluate_task(
        store, "no-adapter", config=EvalConfig(n_resamples=50, store_result=False), progress=messages.append
    )
    assert set(report.systems) == {"teacher"}
    assert any("teacher only" in m for m in messages)
    store.close()


def test_cli_eval_json_and_table(tiny_adapter, _isolated_home: Path):
    from protege.cli.main import cli

    store, rec = tiny_adapter
    db = f"sqlite:///{_isolated_home / 'p.db'}"
    runner = CliRunner()
    quick = ["eval", "tiny-task", "--db", db, "--no-baselines", "--resamples", "50"]
    res = runner.invoke(cli, [*quick, "--sample", "3", "--latency-samples", "1", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{") :])
    assert data["n_examples"] == 3 and set(data["systems"]) == {"student", "teacher"}
    res = runner.invoke(cli, [*quick, "--sample", "2", "--latency-samples", "0"])
    assert res.exit_code == 0, res.output
    assert "exact_call_match" in res.output and "share of teacher quality" in res.output
    res = runner.invoke(cli, ["eval", "no-such-task", "--db", db])
    assert res.exit_code == 2 and "no dataset" in res.output and "Traceback" not in res.output


def test_on_traces_from_the_bfcl_importer_and_a_built_dataset(store):
    """The whole path: BFCL traces imported as an agent would have produced
    them, a task dataset built from them, the student scored against the
    teacher, the ground truth and BFCL's own checker."""
    from protege.datasets import DatasetConfig, build_dataset
    from protege.importers import bfcl

    bfcl.import_bfcl(store, ["simple_python", "parallel", "irrelevance", "live_simple"], limit=30)
    store.set_task_ids({t.id: "bfcl-mix" for t in store.iter_traces()})
    build_dataset(store, "bfcl-mix", DatasetConfig(test_frac=0.3))

    def student(row):
        # Right, except that it calls a tool where none is wanted.
        if row["completion"].get("tool_calls") or not row.get("tools"):
            return copy.deepcopy(row["completion"])
        name = row["tools"][0]["function"]["name"]
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "x", "type": "function", "function": {"name": name, "arguments": "{}"}}],
        }

    cfg = EvalConfig(n_resamples=200, checker="bfcl", store_result=False)
    report = evaluate_task(
        store,
        "bfcl-mix",
        predictors={"student": FunctionPredictor("student", student)},
        baselines=False,
        config=cfg,
    )
    assert report.output_type == "tool_call" and report.n_examples >= 10
    assert report.share_basis == "ground_truth"
    teacher_gt = report.systems["teacher"].vs_ground_truth["exact_call_match"].value
    student_gt = report.systems["student"].vs_ground_truth["exact_call_match"].value
    assert teacher_gt > 0.9 and student_gt < teacher_gt
    assert report.systems["student"].metrics["correct_abstention"].value == 0.0
    assert report.cost["teacher_per_1k"] > 0
    if checker_status() is None:
        assert report.bfcl["compared"] == report.n_examples
        assert report.bfcl["agree"] == report.bfcl["compared"], report.bfcl["disagreements"]


@pytest.mark.slow
def test_smollm2_student_end_to_end(_isolated_home: Path):
    """SmolLM2-135M (packaged GGUF) with a fresh LoRA adapter, evaluated with
    baselines on real BFCL examples: everything runs, answers parse."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from protege.models.loader import load_base
    from protege.registry import Registry

    model, _ = load_base("smollm2-135m-instruct")
    adir = _isolated_home / "adapter"
    get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"])).save_pretrained(adir)
    meta = {"base_model": "smollm2-135m-instruct", "drop_prefix": False, "config": {"max_new_tokens": 48}}
    (adir / "protege_adapter.json").write_text(json.dumps(meta))
    write_dataset(
        _isolated_home, "smol", bfcl_rows("simple_python", 6), bfcl_rows("simple_python", 9)[6:], "tool_call"
    )
    store = open_store(f"sqlite:///{_isolated_home / 'p.db'}")
    try:
        rec = Registry(store).register("smol", base_model="smollm2-135m-instruct", path=adir)
        report = evaluate_task(store, "smol", adapter=rec.id, config=EvalConfig(n_resamples=100, few_shot=1))
    finally:
        store.close()
    st = report.systems["student"]
    assert st.tokens_per_s > 1 and st.latency_ms > 0
    assert 0 <= st.metrics["exact_call_match"].value <= 1
    assert report.systems["base_few_shot"].metrics


def test_teacher_cost_from_recorded_cost_or_the_price_table():
    from protege.evaluate.cost import saving, student_cost_per_1k, teacher_cost_per_1k

    recorded = [Trace(request={}, cost_usd=0.001), Trace(request={}, cost_usd=0.003)]
    assert teacher_cost_per_1k(recorded) == (pytest.approx(2.0), "recorded")
    priced = [Trace(request={}, model="gpt-4o", prompt_tokens=1000, completion_tokens=100)]
    cost, source = teacher_cost_per_1k(priced)
    assert source == "price table" and cost > 0
    assert teacher_cost_per_1k([Trace(request={}, model="no-such-model", prompt_tokens=5)]) == (
        None,
        "unknown",
    )
    # $3.60/h and 0.5 s per call: $0.0005 per call, $0.50 per 1,000.
    assert student_cost_per_1k(0.5, "cuda:0", CostConfig(device_usd_per_hour=3.6)) == pytest.approx(0.5)
    assert saving(0.5, 2.0) == pytest.approx(0.75)
