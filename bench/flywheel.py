"""Flywheel benchmark: what incremental runs and resuming save.

Three synthetic recurring call sites (tool calls) plus a long tail, a tiny
Llama trained for real (the orchestration, not model quality, is measured):

* steady state: a second run with no new data (incremental: nothing to
  train) against the naive loop that retrains every task on every run;
* crash recovery: a run that crashed in its last task's evaluation, resumed
  (finished steps skipped) against starting that run again from scratch.

    .venv/bin/python bench/flywheel.py [--reps 3] [--traces 120]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SITES = [
    ("You are a weather assistant.", "get_weather", "city", ["Paris", "Oslo", "Rome", "Lima", "Kyiv", "Quito"]),
    ("You convert currencies for shoppers.", "convert", "currency", ["EUR", "USD", "JPY", "GBP", "CHF", "SEK"]),
    ("You look up train departures.", "departures", "station", ["Lyon", "Graz", "Bern", "Gent", "Kiel", "Turku"]),
]


def traces(n: int, start: int = 0) -> list[Any]:
    from protege.capture.extract import build_trace

    out = []
    for s, (system, fn, arg, values) in enumerate(SITES):
        tools = [{"type": "function", "function": {"name": fn, "parameters": {
            "type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]}}}]
        for i in range(start, start + n):
            v = values[i % len(values)]
            req = {"model": "gpt-4o", "tools": tools, "messages": [
                {"role": "system", "content": system}, {"role": "user", "content": f"{fn} for {v}, request {i}"}]}
            call = {"id": f"c{s}-{i}", "type": "function", "function": {"name": fn, "arguments": json.dumps({arg: v})}}
            resp = {"id": f"r{s}-{i}", "object": "chat.completion", "created": 0, "model": "gpt-4o",
                    "choices": [{"index": 0, "finish_reason": "tool_calls",
                                 "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
            out.append(build_trace(req, resp, session_id=f"{s}-{i}"))
    return out


class Trainer:
    def __init__(self, tiny: Path) -> None:
        from transformers import AutoTokenizer

        self.tiny = tiny
        self.tok = AutoTokenizer.from_pretrained(str(tiny))
        self.crash_on: str | None = None
        self.trained = 0

    def __call__(self, task_id: str, *, config: Any, dataset: Any, store: Any, progress: bool) -> Any:
        from transformers import AutoModelForCausalLM

        from protege.train import train_adapter

        config.max_steps, config.batch_size, config.threads, config.layers = 4, 8, 1, "all"
        config.max_length, config.base = 256, str(self.tiny)
        self.trained += 1
        return train_adapter(task_id, config=config, dataset=dataset, store=store, tokenizer=self.tok,
                             model=AutoModelForCausalLM.from_pretrained(str(self.tiny)))


def oracle() -> dict[str, Any]:
    # A student answering like the teacher: the gate passes and every step runs.
    from protege.evaluate import FunctionPredictor

    return {"student": FunctionPredictor("student", lambda row: row["completion"])}


def cfg(**kw: Any) -> Any:
    from protege.flywheel import FlywheelConfig

    base = {"curate_ner": False, "discover": False, "min_examples": 40, "min_test_examples": 10,
            "shadow": False, "max_tasks": 3}
    base.update(kw)
    return FlywheelConfig(**base)


def one_rep(tiny: Path, n: int) -> dict[str, float]:
    from protege.database import open_store
    from protege.flywheel import run_flywheel

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        os.environ["PROTEGE_HOME"] = d
        store = open_store(f"sqlite:///{d}/p.db")
        store.add_traces(traces(n))
        tr = Trainer(tiny)
        t0 = time.perf_counter()
        run_flywheel(store, cfg(), train_fn=tr, predictors=oracle())
        out["first_run_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = run_flywheel(store, cfg(), train_fn=tr, predictors=oracle())
        out["incremental_s"] = time.perf_counter() - t0
        assert rep.trained() == []
        # Naive: retrain every task on every run, whatever changed.
        t0 = time.perf_counter()
        rep = run_flywheel(store, cfg(force=True), train_fn=tr,
                           predictors=oracle())
        out["naive_retrain_all_s"] = time.perf_counter() - t0
        assert len(rep.trained()) == len(SITES)
        store.close()
    with tempfile.TemporaryDirectory() as d:
        os.environ["PROTEGE_HOME"] = d
        store = open_store(f"sqlite:///{d}/p.db")
        store.add_traces(traces(n))
        tr = Trainer(tiny)
        crash = {"armed": True}
        from protege.flywheel.run import fingerprint_task_id

        last = sorted(fingerprint_task_id(t.request) for t in traces(1))[-1]

        def crash_train(task_id: str, **kw: Any) -> Any:
            res = tr(task_id, **kw)
            if task_id == last and crash["armed"]:
                crash["armed"] = False
                raise RuntimeError("simulated crash after the last task's training")
            return res

        t0 = time.perf_counter()
        failed = run_flywheel(store, cfg(), train_fn=crash_train, predictors=oracle())
        out["crashed_run_s"] = time.perf_counter() - t0
        assert failed.status == "failed"
        t0 = time.perf_counter()
        done = run_flywheel(store, cfg(), train_fn=crash_train, predictors=oracle())
        out["resume_s"] = time.perf_counter() - t0
        assert done.status == "done" and done.resumed
        store.close()
    with tempfile.TemporaryDirectory() as d:
        # Starting over after the crash: the whole run again.
        os.environ["PROTEGE_HOME"] = d
        store = open_store(f"sqlite:///{d}/p.db")
        store.add_traces(traces(n))
        t0 = time.perf_counter()
        run_flywheel(store, cfg(), train_fn=Trainer(tiny), predictors=oracle())
        out["restart_s"] = time.perf_counter() - t0
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--traces", type=int, default=120, help="traces per call site")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from protege.models.tiny import build_tiny

    with tempfile.TemporaryDirectory() as d:
        tiny = build_tiny(Path(d) / "tiny", hidden_size=32, layers=1)
        reps = [one_rep(tiny, a.traces) for _ in range(a.reps)]
    med = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
    print(f"flywheel bench: {len(SITES)} call sites x {a.traces} traces, tiny model, {a.reps} reps (medians)")
    print(f"{'':34}{'protege':>10}{'naive':>10}{'ratio':>8}")
    print(f"{'steady-state run, no new data':34}{med['incremental_s']:>9.2f}s{med['naive_retrain_all_s']:>9.2f}s"
          f"{med['naive_retrain_all_s'] / med['incremental_s']:>7.1f}x")
    print(f"{'after a crash in the last task':34}{med['resume_s']:>9.2f}s{med['restart_s']:>9.2f}s"
          f"{med['restart_s'] / med['resume_s']:>7.1f}x")
    print(f"(first run {med['first_run_s']:.2f}s; the crashed attempt took {med['crashed_run_s']:.2f}s)")


if __name__ == "__main__":
    main()
