"""Evaluation by confirming the teacher's draft, against generating every answer.

    make demo                                    # once: trains the students in .protege-demo
    .venv/bin/python bench/verify.py             # every trained task of the demo home
    .venv/bin/python bench/verify.py --split validation --task task_d520c68a67

For each task with a trained adapter, the same loaded student answers the
split twice, in one run: every answer generated greedily (``verify=False``,
how evaluation worked before), and with the teacher's answer as a draft that
one forward pass per conversation confirms where greedy decoding would have
written it, generating only the rest (``TransformersPredictor.verify_drafts``,
the default). Printed side by side: wall time, the share of answers
confirmed, the share of answers identical between the two sides, the
evaluation's primary score (semantic call agreement) on each side, and the
largest difference of any confidence signal. The two sides must agree on
every answer: confirmation is exact, not an estimate.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.constrain import demo_arguments, load_task_student, open_home  # noqa: E402


def main() -> None:
    ap = demo_arguments(__doc__)
    ap.add_argument("--split", default="test", choices=("test", "validation"))
    ap.add_argument("--limit", type=int, default=None, help="first N examples only")
    ap.add_argument("--out", type=Path, default=Path("/tmp/protege-verify.jsonl"))
    a = ap.parse_args()
    found = open_home(a.home, a.task)

    from rich.console import Console
    from rich.table import Table

    from protege.datasets import read_jsonl
    from protege.evaluate.metrics import tool_call_components
    from protege.evaluate.predictors import TransformersPredictor

    con = Console(width=160)
    t = Table(title=f"evaluation of the {a.split} split: every answer generated vs drafts confirmed (same adapter)")
    for col in ("task", "n", "side", "wall s", "confirmed", "generated", "semantic agreement",
                "answers identical", "max signal diff"):
        t.add_column(col)
    for task, adapter_dir, data_dir in found:
        rows = read_jsonl(data_dir / f"{a.split}.jsonl")[: a.limit]
        student, settings = load_task_student(adapter_dir, data_dir)
        refs = [r["completion"] for r in rows]
        tools = [r.get("tools") for r in rows]
        sides: dict[str, Any] = {}
        for side, verify in (("generate every answer", False), ("confirm drafts (protege)", True)):
            p = TransformersPredictor("student", student.model, student.tokenizer, verify=verify, **settings)
            t0 = time.perf_counter()
            preds = p.predict(rows)
            wall = time.perf_counter() - t0
            right = tool_call_components(preds, refs, tools)["exact"]
            sides[side] = {"wall": wall, "preds": preds, "signals": p.signals, "stats": dict(p.stats),
                           "semantic": float(right.mean())}
        gen, ver = sides["generate every answer"], sides["confirm drafts (protege)"]
        same = sum(x == y for x, y in zip(gen["preds"], ver["preds"], strict=True)) / len(rows)
        diff = max((abs(x[k] - y[k]) for x, y in zip(gen["signals"], ver["signals"], strict=True)
                    if x and y for k in x), default=0.0)
        for side, s in sides.items():
            st = s["stats"]
            t.add_row(task, str(len(rows)), side, f"{s['wall']:.0f}", str(int(st.get("verified", 0))),
                      str(int(st.get("calls", 0))), f"{s['semantic']:.3f}",
                      f"{same:.3f}" if s is ver else "", f"{diff:.2e}" if s is ver else "")
        record = {"task": task, "split": a.split, "n": len(rows), "identical": same, "max_signal_diff": diff,
                  **{k: {"wall": s["wall"], "semantic": s["semantic"], "stats": s["stats"]}
                     for k, s in sides.items()},
                  "speedup": gen["wall"] / ver["wall"] if ver["wall"] else None}
        with a.out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        con.print(f"{task}: {gen['wall'] / ver['wall']:.2f}x faster, answers identical {same:.3f}")
    con.print(t)


if __name__ == "__main__":
    main()
