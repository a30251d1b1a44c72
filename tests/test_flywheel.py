"""The flywheel end to end on a tiny model and a small synthetic store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from protege.capture.extract import build_trace
from protege.flywheel import FlywheelConfig, run_flywheel, run_status
from protege.flywheel.migrations import runs_table, steps_table, tasks_state_table
from protege.flywheel.run import fingerprint_task_id

CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon", "Prague", "Dublin", "Athens",
          "Warsaw", "Zurich", "Brussels", "Helsinki", "Stockholm", "Budapest", "Amsterdam", "Copenhagen"]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
SYSTEM = "You are a weather assistant. Call get_weather for the city the user asks about."


def weather_trace(i: int, *, system: str = SYSTEM, served_by: str = "teacher", task_id: str | None = None,
                  created_at: float | None = None) -> Any:
    city = CITIES[i % len(CITIES)]
    asks = ["What is the weather in {}?", "How warm is it in {} today?", "Is it raining in {}?",
            "Weather report for {} please", "Do I need a coat in {}?"]
    request = {"model": "gpt-4o", "tools": TOOLS, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": asks[(i // len(CITIES)) % len(asks)].format(city) + f" (#{i})"}]}
    call = {"id": f"call_{i}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}
    response = {"id": f"cmpl-{i}", "object": "chatcmpl", "created": 0, "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}}
    fields: dict[str, Any] = {"session_id": f"s{i}", "served_by": served_by}
    if task_id:
        fields["task_id"] = task_id
    if created_at is not None:
        fields["created_at"] = created_at
    return build_trace(request, response, **fields)


def long_tail(i: int) -> Any:
    request = {"model": "gpt-4o", "messages": [{"role": "system", "content": f"Translator number {i}: {'x' * i}"},
                                                {"role": "user", "content": "Say hi"}],
               "tools": [{"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}]}
    response = {"id": f"t-{i}", "object": "chat.completion", "created": 0, "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}]}
    return build_trace(request, response)


def fill(store: Any, n: int = 90, start: int = 0) -> None:
    store.add_traces([weather_trace(i) for i in range(start, start + n)] + [long_tail(i) for i in range(3)])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from protege.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"), hidden_size=32, layers=1)


@pytest.fixture(scope="module")
def tok(tiny: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny))


def tiny_model(tok: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=2048,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).eval()


class TinyTrainer:
    """train_adapter on a one-block model: the real trainer, registry and files, in a second."""

    def __init__(self, tok: Any, fail_once: bool = False) -> None:
        self.tok = tok
        self.fail_once = fail_once
        self.calls: list[str] = []

    def __call__(self, task_id: str, *, config: Any, dataset: Any, store: Any, progress: bool) -> Any:
        from protege.train import train_adapter

        self.calls.append(task_id)
        if self.fail_once:
            self.fail_once = False
            raise RuntimeError("simulated crash while training")
        config.max_steps, config.batch_size, config.threads = 2, 4, 1
        config.layers, config.max_length, config.eval_every = "all", 256, 0
        config.base = "tiny-llama"
        return train_adapter(task_id, config=config, dataset=dataset, store=store, model=tiny_model(self.tok),
                             tokenizer=self.tok)


def oracle() -> dict[str, Any]:
    # Evaluation is the evaluate stage's job (tested there); here a student that
    # answers like the teacher makes the gate pass so the rest of the loop runs.
    from protege.evaluate import FunctionPredictor

    return {"student": FunctionPredictor("student", lambda row: row["completion"])}


def config(**kw: Any) -> FlywheelConfig:
    base = {"curate_ner": False, "discover": False, "min_examples": 40, "min_test_examples": 10,
            "retrain_min_new": 30, "retrain_min_new_frac": 0.25,
            "shadow_min_results": 10, "drift_min_traces": 10}
    base.update(kw)
    return FlywheelConfig(**base)


def steps_of(store: Any, run_id: str) -> list[Any]:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(steps_table).where(steps_table.c.run_id == run_id).order_by(steps_table.c.seq)
        ).all()


def state_of(store: Any, task_id: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(tasks_state_table).where(tasks_state_table.c.task_id == task_id)).first()


def add_shadow(store: Any, task_id: str, adapter: str, n: int, agree: int) -> None:
    from protege.router.migrations import shadow_results

    now = time.time()
    with store.engine.begin() as conn:
        for i in range(n):
            conn.execute(shadow_results.insert().values(
                trace_id=f"sh-{adapter}-{i}-{now}", task_id=task_id, adapter=adapter, agree=int(i < agree),
                valid=1, reasons=None, student_response=None, latency_ms=5.0, created_at=now))


TASK = fingerprint_task_id(weather_trace(0).request)


def test_steps_run_in_order_and_are_stored(store: Any, tok: Any) -> None:
    from protege.registry import Registry
    from protege.router.routes import list_routes

    fill(store)
    trainer = TinyTrainer(tok)
    rep = run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    assert rep.status == "done", rep.error
    assert trainer.calls == [TASK]  # the long tail (one call per site) gets no student
    rows = steps_of(store, rep.run_id)
    assert [r.step for r in rows] == ["curate", "tasks", "plan", f"dataset:{TASK}", f"select:{TASK}",
                                      f"train:{TASK}",
                                      f"evaluate:{TASK}", f"gate:{TASK}"]
    assert all(r.status == "done" and r.finished_at >= r.started_at for r in rows)
    gate = json.loads(rows[-1].outcome)
    assert gate["decision"] == "pass" and gate["action"] == "shadow"
    adapter = Registry(store).resolve(json.loads(rows[5].outcome)["adapter_id"])
    assert adapter.status == "shadow" and Path(adapter.path).exists()
    assert {r.task_id: r.label for r in list_routes(store)} == {TASK: "shadow"}
    st = state_of(store, TASK)
    assert st.state == "shadow" and st.trained_on == 90 and json.loads(st.fingerprints)
    status = run_status(store)
    assert status["runs"][0]["status"] == "done" and status["tasks"][TASK]["state"] == "shadow"


def test_crashed_run_resumes_from_last_finished_step(tmp_path: Path, tok: Any) -> None:
    from protege.database import open_store

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    fill(store)
    trainer = TinyTrainer(tok, fail_once=True)
    first = run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    assert first.status == "failed" and "simulated crash" in first.error
    failed = {r.step: r.status for r in steps_of(store, first.run_id)}
    assert failed[f"train:{TASK}"] == "failed" and failed[f"dataset:{TASK}"] == "done"

    second = run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    assert second.run_id == first.run_id and second.resumed and second.status == "done"
    resumed = {s["step"]: s.get("resumed") for s in second.steps}
    assert resumed["curate"] and resumed["tasks"] and resumed[f"dataset:{TASK}"]
    assert resumed[f"train:{TASK}"] is False and trainer.calls == [TASK, TASK]
    with store.engine.connect() as conn:
        run = conn.execute(sa.select(runs_table)).one()
    assert run.status == "done" and run.resumed == 1
    store.close()


def test_second_run_without_new_data_trains_nothing_then_new_data_retrains(tmp_path: Path, tok: Any) -> None:
    from protege.database import open_store

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    fill(store)
    trainer = TinyTrainer(tok)
    run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    # The shadow phase ends: the student is promoted and goes live.
    add_shadow(store, TASK, state_of(store, TASK).adapter_id, 12, 12)
    from protege.registry import Registry

    Registry(store).resolve(state_of(store, TASK).adapter_id)
    second = run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    assert second.trained() == [] and trainer.calls == [TASK]
    assert second.tasks[TASK]["action"] == "promoted"
    third = run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    assert third.trained() == [] and "new examples" in third.tasks[TASK]["reason"]

    store.add_traces([weather_trace(i) for i in range(1000, 1040)])
    fourth = run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    assert fourth.trained() == [TASK] and "40 new examples" in fourth.tasks[TASK]["why"]
    # A student already serves the task: the new one that passes the gate replaces it.
    assert fourth.tasks[TASK]["action"] == "promoted"
    store.close()


def _promoted(tmp_path: Path, tok: Any) -> Any:
    from protege.database import open_store

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    fill(store)
    run_flywheel(store, config(shadow=False), train_fn=TinyTrainer(tok), predictors=oracle())
    assert state_of(store, TASK).state == "promoted"
    return store


def test_falling_validation_rate_demotes_with_reason(tmp_path: Path, tok: Any) -> None:
    from protege.registry import Registry
    from protege.router.routes import list_routes

    store = _promoted(tmp_path, tok)
    adapter = state_of(store, TASK).adapter_id
    now = time.time() + 1
    store.add_traces([weather_trace(2000 + i, served_by="fallback" if i % 2 else "student", task_id=TASK,
                                    created_at=now) for i in range(20)])
    trainer = TinyTrainer(tok)
    rep = run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    drift = next(s for s in rep.steps if s["name"] == "drift")
    assert drift["outcome"]["action"] == "demote" and "fell back" in drift["reason"]
    stored = {r.step: r for r in steps_of(store, rep.run_id)}[f"drift:{TASK}"]
    assert "live validation rate fell" in stored.reason
    assert Registry(store).resolve(adapter).status == "retired"
    assert "live validation rate" in Registry(store).resolve(adapter).status_reason
    assert trainer.calls == [TASK]  # and it is retrained at once
    assert {r.task_id: r.label for r in list_routes(store)}[TASK] in ("shadow", "off")
    store.close()


def test_input_shift_triggers_retraining_with_reason(tmp_path: Path, tok: Any) -> None:
    store = _promoted(tmp_path, tok)
    now = time.time() + 1
    # The same task, now called from a new prompt template: a call site unseen in training.
    store.add_traces([weather_trace(3000 + i, system="Reply in French. You forecast weather for travellers.",
                                    task_id=TASK, created_at=now) for i in range(15)])
    trainer = TinyTrainer(tok)
    rep = run_flywheel(store, config(), train_fn=trainer, predictors=oracle())
    drift = next(s for s in rep.steps if s["name"] == "drift")
    assert drift["outcome"]["action"] == "retrain"
    assert "unseen in training" in drift["reason"]
    assert trainer.calls == [TASK] and rep.tasks[TASK]["why"].startswith("drift:")
    store.close()


def test_approve_stops_before_promotion(tmp_path: Path, tok: Any) -> None:
    from protege.database import open_store
    from protege.registry import Registry
    from protege.router.routes import list_routes

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    fill(store)
    run_flywheel(store, config(approve=True), train_fn=TinyTrainer(tok), predictors=oracle())
    adapter = state_of(store, TASK).adapter_id
    add_shadow(store, TASK, adapter, 12, 12)
    rep = run_flywheel(store, config(approve=True), train_fn=TinyTrainer(tok), predictors=oracle())
    assert rep.status == "waiting_approval" and rep.tasks[TASK]["action"] == "awaiting_approval"
    assert "protege adapters promote" in rep.tasks[TASK]["reason"]
    assert Registry(store).resolve(adapter).status == "shadow"
    assert {r.task_id: r.label for r in list_routes(store)}[TASK] == "shadow"

    Registry(store).promote(adapter, "approved by a person")
    rep = run_flywheel(store, config(approve=True), train_fn=TinyTrainer(tok), predictors=oracle())
    assert rep.tasks[TASK]["action"] == "promoted"
    assert {r.task_id: r.label for r in list_routes(store)}[TASK] == "live"
    store.close()


def test_low_shadow_agreement_retires(tmp_path: Path, tok: Any) -> None:
    from protege.database import open_store
    from protege.registry import Registry

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    fill(store)
    run_flywheel(store, config(), train_fn=TinyTrainer(tok), predictors=oracle())
    adapter = state_of(store, TASK).adapter_id
    add_shadow(store, TASK, adapter, 12, 6)
    rep = run_flywheel(store, config(), train_fn=TinyTrainer(tok), predictors=oracle())
    assert rep.tasks[TASK]["action"] == "retired" and "below" in rep.tasks[TASK]["reason"]
    assert Registry(store).resolve(adapter).status == "retired"
    store.close()


def currency_trace(i: int) -> Any:
    request = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You convert money for shoppers. Use the convert tool."},
        {"role": "user", "content": f"How much is {10 + i} dollars in euros?"}],
        "tools": [{"type": "function", "function": {"name": "convert", "parameters": {
            "type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}}}]}
    call = {"id": f"cc{i}", "type": "function", "function": {"name": "convert", "arguments": json.dumps({"amount": 10 + i})}}
    response = {"id": f"cur-{i}", "object": "chat.completion", "created": 0, "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    return build_trace(request, response, session_id=f"cur{i}")


def test_tasks_from_discovery_and_rediscovery_on_new_call_sites(tmp_path: Path, tok: Any) -> None:
    from protege.database import open_store
    from protege.tasks import TaskIndex

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    fill(store)
    trainer = TinyTrainer(tok)
    cfg = config(discover=True, embed_model="hashing")
    first = run_flywheel(store, cfg, train_fn=trainer, predictors=oracle())
    assert first.status == "done", first.error
    tasks = next(s for s in first.steps if s["name"] == "tasks")["outcome"]
    assert tasks["how"] == "discovery" and "discovered" in tasks
    (weather,) = trainer.calls
    assert not weather.startswith("fp-")  # the tasks stage's id: the gateway's index routes to it
    assert TaskIndex.load(store).assign(weather_trace(5000).request)[0] == weather

    store.add_traces([weather_trace(i) for i in range(100, 110)])
    second = run_flywheel(store, cfg, train_fn=trainer, predictors=oracle())
    tasks = next(s for s in second.steps if s["name"] == "tasks")["outcome"]
    assert tasks["assign"]["assigned"] == 10 and "discovered" not in tasks  # known call site: assigned only

    store.add_traces([currency_trace(i) for i in range(60)])
    third = run_flywheel(store, cfg, train_fn=trainer, predictors=oracle())
    tasks = next(s for s in third.steps if s["name"] == "tasks")["outcome"]
    assert "new call sites" in tasks["reason"] and "discovered" in tasks
    assert len(trainer.calls) == 2 and trainer.calls[1] != weather
    store.close()


def test_cli_status_and_run(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli as main

    db = f"sqlite:///{tmp_path / 'c.db'}"
    runner = CliRunner()
    res = runner.invoke(main, ["flywheel", "run", "--once", "--min-examples", "1000", "--db", db, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["status"] == "done"
    res = runner.invoke(main, ["flywheel", "status", "--db", db])
    assert res.exit_code == 0 and "done" in res.output
    res = runner.invoke(main, ["flywheel", "run", "--once", "--every", "1h", "--db", db])
    assert res.exit_code == 2 and "exclude" in res.output


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_demo_end_to_end(tmp_path: Path) -> None:
    """The real demo: BFCL traffic through the gateway, SmolLM2-135M students, unseen traffic."""
    from protege.demo.end_to_end import run_demo

    s = run_demo(tmp_path / "demo", max_steps=10, max_tasks=1)
    assert s["seen"]["success"] > 0.9  # the replay teacher answers its own ground truth
    assert s["flywheel"]["status"] == "done", s["flywheel"]["error"]
    trained = [t for t in s["flywheel"]["tasks"].values() if t.get("adapter")]
    assert len(trained) == 1 and trained[0]["evaluation"]["n"] > 0
    assert s["serving"]["calls"] > 0 and s["teacher_only"]["entries"] == s["with_students"]["entries"]
    assert (tmp_path / "demo" / "report.html").read_text().count("Demo: unseen traffic") == 1


class SureOrWrong:
    """A student right and sure on three rows in four, wrong and unsure on the rest."""

    name = "student"

    def __init__(self) -> None:
        self.confidences: list[float | None] = []

    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out, self.confidences = [], []
        for r in rows:
            wrong = int(str(r["id"])[-3:], 36) % 4 == 0
            if wrong:
                call = {"id": "x", "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Atlantis"})}}
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
            else:
                out.append(dict(r["completion"]))
            self.confidences.append(0.3 if wrong else 0.99)
        return out


def test_gate_with_a_confidence_floor_promotes_and_deferrals_are_not_failures(tmp_path: Path, tok: Any) -> None:
    from protege.database import open_store
    from protege.flywheel.drift import served_counts
    from protege.registry import Registry

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    fill(store, n=160)
    student = SureOrWrong()
    rep = run_flywheel(store, config(shadow=False, min_test_examples=10, min_coverage=0.5),
                       train_fn=TinyTrainer(tok), predictors={"student": student})
    info = rep.tasks[TASK]
    assert info["action"] == "promoted" and info["floor"]["min_confidence"] == pytest.approx(0.99)
    assert "at confidence >= 0.99" in info["reason"]
    rec = Registry(store).promoted(TASK)
    assert rec.metrics["serving"]["min_confidence"] == pytest.approx(0.99)
    # Live: answers under the floor went to the teacher; that is not a falling validation rate.
    now = time.time() + 1
    traces = [weather_trace(3000 + i, served_by="student", task_id=TASK, created_at=now) for i in range(10)]
    for i in range(10):
        t = weather_trace(3100 + i, served_by="fallback", task_id=TASK, created_at=now)
        t.fallback_reason = "low_confidence"
        traces.append(t)
    store.add_traces(traces)
    assert served_counts(store, TASK, now - 1) == {"student": 10, "deferred": 10}
    rep2 = run_flywheel(store, config(shadow=False, min_test_examples=10, min_coverage=0.5),
                        train_fn=TinyTrainer(tok), predictors={"student": SureOrWrong()})
    drift = next(s for s in rep2.steps if s["name"] == "drift")
    assert drift["outcome"]["action"] != "demote" and drift["outcome"]["signals"]["deferred_rate"] == 0.5
    store.close()


def test_a_task_too_small_for_the_gates_evidence_is_not_trained(store: Any, tok: Any) -> None:
    fill(store)  # 90 calls: a 20% test split of ~18, under a gate needing 30
    trainer = TinyTrainer(tok)
    rep = run_flywheel(store, config(min_test_examples=30), train_fn=trainer, predictors=oracle())
    assert trainer.calls == []
    assert "test examples < the gate's 30" in rep.tasks[TASK]["reason"]


def test_recipe_search_keeps_the_best_on_validation_and_records_every_trial(store: Any, tok: Any) -> None:
    """Two recipes; the student trained with rank 8 answers the validation
    split right, the rank-4 one wrong: rank 8 is kept, rank 4 retired, both
    trials are in the registry."""
    from protege.evaluate import FunctionPredictor
    from protege.flywheel.students import recipe_trials
    from protege.registry import Registry

    fill(store)

    class RankTrainer(TinyTrainer):
        rank = 0

        def __call__(self, task_id: str, *, config: Any, **kw: Any) -> Any:
            self.rank = config.rank
            return super().__call__(task_id, config=config, **kw)

    trainer = RankTrainer(tok)
    wrong = {"role": "assistant", "content": "no idea", "tool_calls": None}
    student = FunctionPredictor("student", lambda row: row["completion"] if trainer.rank == 8 else wrong)
    rep = run_flywheel(store, config(shadow=False, recipes=({"rank": 4}, {"rank": 8})), train_fn=trainer,
                       predictors={"student": student})
    trials = recipe_trials(store, TASK)
    assert sorted(t["recipe"]["rank"] for t in trials) == [4, 8]
    best = next(t for t in trials if t["chosen"])
    assert best["recipe"] == {"rank": 8} and best["validation_score"] == 1.0
    assert next(t for t in trials if not t["chosen"])["status"] == "retired"
    assert rep.tasks[TASK]["adapter"] == best["adapter"]
    assert Registry(store).get(best["adapter_id"]).status != "retired"
    with pytest.raises(ValueError, match="unknown training settings"):
        from protege.flywheel.students import recipe_search

        recipe_search(store, config(recipes=({"no_such": 1},)), TASK, {"version": "v1"}, trainer, False,
                       "tiny-llama", None)


def test_cli_trials_lists_recipe_trials(tmp_path: Path, tok: Any) -> None:
    from click.testing import CliRunner

    from protege.cli.main import cli
    from protege.database import open_store
    from protege.evaluate import FunctionPredictor

    url = f"sqlite:///{tmp_path / 'p.db'}"
    store = open_store(url)
    fill(store)
    run_flywheel(store, config(shadow=False, recipes=({"rank": 4}, {"rank": 8})), train_fn=TinyTrainer(tok),
                 predictors={"student": FunctionPredictor("student", lambda row: row["completion"])})
    store.close()
    res = CliRunner().invoke(cli, ["flywheel", "trials", "--db", url, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 2 and sum(r["chosen"] for r in rows) == 1
    assert CliRunner().invoke(cli, ["flywheel", "trials", "--db", url]).exit_code == 0


def test_demo_attributes_untagged_unseen_calls_to_their_tasks(tmp_path: Path) -> None:
    """With no student live the gateway tags no call; the demo's per-task table
    must still count each unseen call under its task, not as long tail."""
    from protege.database import open_store
    from protege.demo.end_to_end import _served_quality
    from protege.store import Trace

    class Index:
        def assign(self, request: dict[str, Any], response: Any = None) -> tuple[str | None, float]:
            text = request["messages"][-1]["content"]
            return ("task_trade", 1.0) if "stock" in text else (None, 0.0)

    class NoReplay:
        def lookup(self, request: dict[str, Any]) -> tuple[None, str]:
            return None, "miss"

    store = open_store(f"sqlite:///{tmp_path / 'unseen.db'}")
    t0 = time.time() - 10
    msgs = ["price of a stock", "buy the stock", "what is 2+2"]
    store.add_traces(Trace(request={"model": "m", "messages": [{"role": "user", "content": m}]},
                           response={"choices": [{"message": {"role": "assistant", "content": "ok"}}]},
                           model="m", created_at=t0 + i, task_id="task_tagged" if i == 2 else None)
                     for i, m in enumerate(msgs))
    out = _served_quality(store, t0 - 1, NoReplay(), tasks=Index())
    store.close()
    assert {k: v["calls"] for k, v in out["per_task"].items()} == {"task_trade": 2, "task_tagged": 1}
    assert out["calls"] == 3 and out["student_share"] == 0.0
