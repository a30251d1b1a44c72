"""Training recipes, side by side, on one task of a demo home.

    make demo                                         # once: captures, and builds the task datasets
    .venv/bin/python bench/recipes.py --home .protege-demo --task "trading-bot · next step" \
        --trial base='{}' --trial lr2e-3='{"lr": 0.002}' --seeds 0,1

Every trial trains a student on the same dataset with the demo's recipe
(``protege.demo.end_to_end``: SmolLM2-135M, packed conversations, LoRA on
every block, two sequences a step, 3 epochs, no wall-clock cap so that a busy
machine changes the time, not the steps) plus the trial's overrides, then
evaluates it as the flywheel does (test split, and the validation split for
the floor). The table gives, per trial and seed, the semantic agreement with
the teacher on test, the agreement on validation, the AURC of the
``mean_logprob`` signal on both splits, and what the floor chosen on
validation serves on test. Figures append to ``--out`` (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIGNAL = "mean_logprob"


def demo_recipe(seed: int, overrides: dict[str, Any]) -> Any:
    from protege.flywheel.config import FlywheelConfig

    cfg = FlywheelConfig().train
    cfg.max_steps, cfg.epochs, cfg.max_tokens, cfg.max_seconds = None, 3.0, None, None
    cfg.batch_size, cfg.max_length, cfg.layers, cfg.threads = 2, 2048, "all", os.cpu_count() or 1
    cfg.eval_every, cfg.max_eval_examples, cfg.seed = 10**9, 8, seed
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise SystemExit(f"unknown training setting {key!r}")
        setattr(cfg, key, value)
    return cfg


def summarise(selective: dict[str, Any]) -> dict[str, Any]:
    """Agreement, AURC on both splits, and the validation floor judged on test."""
    import numpy as np

    from protege.evaluate import selective as S
    from protege.evaluate.gate import GateThresholds

    val = selective["validation"]
    test_right = (np.asarray(selective["student"]) >= np.asarray(selective["teacher"])).astype(float)
    val_right = (np.asarray(val["student"]) >= np.asarray(val["teacher"])).astype(float)
    target = 1.0 - (1.0 - GateThresholds().min_share) / 2  # the gate's floor target on validation
    cut = S.floor_for(val["signals"][SIGNAL], val_right, target)
    conf = np.asarray([-np.inf if c is None else c for c in selective["signals"][SIGNAL]])
    served = conf >= (np.inf if cut is None else cut)
    return {
        "test_agreement": float(test_right.mean()), "val_agreement": float(val_right.mean()),
        "aurc_val": S.aurc(val["signals"][SIGNAL], val_right), "aurc_test": S.aurc(selective["signals"][SIGNAL],
                                                                                    test_right),
        "floor_served": int(served.sum()), "floor_right": float(test_right[served].mean()) if served.any() else None,
        "n_test": len(test_right), "n_val": len(val_right),
    }


def run_trial(store: Any, task_id: str, name: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    from protege.datasets import load_dataset
    from protege.evaluate.runner import EvalConfig, evaluate_task
    from protege.train import train_adapter

    t0 = time.perf_counter()
    res = train_adapter(task_id, config=demo_recipe(seed, overrides), dataset=load_dataset(task_id, None),
                        store=store)
    t1 = time.perf_counter()
    rep = evaluate_task(store, task_id, adapter=res.record.id, baselines=False,
                        config=EvalConfig(seed=0, latency_samples=0))
    out = {"trial": name, "overrides": overrides, "seed": seed, "adapter": res.record.id,
           "steps": res.metrics.get("steps"), "train_s": round(t1 - t0, 1),
           "eval_s": round(time.perf_counter() - t1, 1), "share": rep.share_of_teacher.to_dict()}
    out.update(summarise(rep.selective))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="a demo home (PROTEGE_HOME) with the task's dataset")
    ap.add_argument("--task", required=True, help="task id or name")
    ap.add_argument("--trial", action="append", default=[], metavar="NAME=JSON",
                    help="a recipe: TrainConfig overrides over the demo's (repeatable)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, each trial trained once per seed")
    ap.add_argument("--out", default="/tmp/protege-recipes.jsonl")
    args = ap.parse_args()
    os.environ["PROTEGE_HOME"] = str(Path(args.home).resolve())

    from rich.console import Console
    from rich.table import Table

    from protege.database import open_store
    from protege.tasks.manage import find_task

    store = open_store()
    task_id = find_task(store, args.task).id
    trials = [(t.split("=", 1)[0], json.loads(t.split("=", 1)[1] if "=" in t else "{}")) for t in args.trial]
    rows = []
    for name, overrides in trials or [("demo", {})]:
        for seed in (int(s) for s in args.seeds.split(",")):
            row = run_trial(store, task_id, name, overrides, seed)
            rows.append(row)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(json.dumps({"task": task_id, **row}) + "\n")
    t = Table(title=f"recipes on {args.task} ({rows[0]['n_test']} test / {rows[0]['n_val']} validation calls)")
    for col in ("trial", "seed", "steps", "test agreement", "val agreement", f"AURC val / test ({SIGNAL})",
                "floor (chosen on val): test served, right", "train s"):
        t.add_column(col)
    for r in rows:
        sh = r["share"]
        t.add_row(r["trial"], str(r["seed"]), str(r["steps"]),
                  f"{r['test_agreement']:.3f} [{sh['low']:.2f}, {sh['high']:.2f}]", f"{r['val_agreement']:.3f}",
                  f"{r['aurc_val']:.3f} / {r['aurc_test']:.3f}",
                  f"{r['floor_served']}, {r['floor_right']:.3f}" if r["floor_right"] is not None else "none",
                  f"{r['train_s']:.0f}")
    Console(width=160).print(t)


if __name__ == "__main__":
    main()
