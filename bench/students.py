"""How good a student gets on the demo's task, by training recipe.

    make demo                                   # once: captures the workload and builds the task dataset
    .venv/bin/python bench/students.py          # the demo's recipe
    .venv/bin/python bench/students.py --steps 200 --batch 4 --max-length 768 --no-pack --layers top8 --free-names
    .venv/bin/python bench/students.py --base gemma-3-270m

Trains a LoRA student on the largest task dataset of a demo home
(``.protege-demo``: BFCL multi-turn agent calls captured through the gateway,
curated, split), then answers the whole test split greedily, the way the
gateway serves, and reports: exact agreement with the teacher (BFCL ground
truth), training and evaluation time, and what a confidence floor would serve
(``protege.evaluate.gate.choose_floor`` with the demo's gate thresholds: lower
bound of the share >= 0.95, at least 30 served test answers), plus the most
confident answers' accuracy. Each run trains in a scratch home, leaving the
demo's state alone. Results append to ``--out`` (JSON lines) so several
recipes can be tabulated side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def largest_task(home: Path) -> str:
    sizes = {}
    for manifest in (home / "artifacts" / "datasets").glob("*/v*/manifest.json"):
        m = json.loads(manifest.read_text())
        sizes[manifest.parent.parent.name] = sum((m.get("counts") or {}).values())
    if not sizes:
        raise SystemExit(f"no task dataset under {home}: run `make demo` first")
    return max(sizes, key=lambda k: sizes[k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, default=ROOT / ".protege-demo")
    ap.add_argument("--task", default=None, help="task id (default: the largest dataset)")
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=90)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=1536)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--no-pack", action="store_true", help="one example per call (no pack_turns)")
    ap.add_argument("--free-names", action="store_true", help="do not constrain tool names when generating")
    ap.add_argument("--out", type=Path, default=Path("/tmp/protege-students.jsonl"))
    a = ap.parse_args()

    home = a.home.resolve()
    task = a.task or largest_task(home)
    scratch = Path(tempfile.mkdtemp(prefix="protege-students-"))
    shutil.copytree(home / "artifacts" / "datasets" / task, scratch / "artifacts" / "datasets" / task)
    if (home / "models").exists():
        (scratch / "models").symlink_to(home / "models")
    os.environ["PROTEGE_HOME"] = str(scratch)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from protege.datasets import load_dataset
    from protege.evaluate.gate import GateThresholds, choose_floor
    from protege.evaluate.predictors import load_student
    from protege.gateway.student import agree
    from protege.train import TrainConfig, train_adapter

    ds = load_dataset(task, None)
    cfg = TrainConfig(base=a.base, max_steps=a.steps, batch_size=a.batch, max_length=a.max_length,
                      layers=a.layers, pack_turns=not a.no_pack, eval_every=a.steps, max_eval_examples=8)
    t0 = time.perf_counter()
    res = train_adapter(task, config=cfg, dataset=ds, progress=True)
    train_s = time.perf_counter() - t0
    student = load_student(Path(res.adapter_dir), constrain=not a.free_names)
    rows = list(ds.test)
    t1 = time.perf_counter()
    preds = student.predict(rows)
    eval_s = time.perf_counter() - t1
    ok = [bool(agree(p, r["completion"])) for p, r in zip(preds, rows, strict=True)]
    conf = student.confidences
    floor, _ = choose_floor(
        {"confidence": conf, "student": [float(x) for x in ok], "teacher": [1.0] * len(ok),
         "valid": [1.0] * len(ok)},
        GateThresholds(min_test_examples=30),
    )
    ranked = [o for _, o in sorted(zip(conf, ok, strict=True), key=lambda x: -(x[0] or 0.0))]
    half = ranked[: len(ranked) // 2]
    out: dict[str, Any] = {
        "task": task, "base": a.base, "steps": a.steps, "batch": a.batch, "max_length": a.max_length,
        "layers": a.layers, "pack_turns": not a.no_pack, "constrained_names": not a.free_names,
        "train_s": round(train_s), "eval_s": round(eval_s), "train_answers": res.metrics.get("train_examples"),
        "train_sequences": res.metrics.get("train_sequences"), "n_test": len(rows),
        "exact_match": round(sum(ok) / len(ok), 4),
        "most_confident_half": f"{sum(half)}/{len(half)}",
        "floor": floor.to_dict() if floor else None,
    }
    print(json.dumps(out))
    with a.out.open("a") as f:
        f.write(json.dumps(out) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
