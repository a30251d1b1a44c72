"""Decoding constraint and deferral signal, side by side, on the demo's students.

    make demo                                         # once: trains the students in .protege-demo
    .venv/bin/python bench/constrain.py               # every trained task of the demo home
    .venv/bin/python bench/constrain.py --samples 4   # also agreement among 4 sampled answers (slow)

For each task with a trained adapter, in one run on the same loaded model:

1. the test split answered greedily with tool names constrained only
   (``names``) and with the whole answer constrained by the request's schemas
   (``schema``, ``protege.models.grammar``): semantic call agreement with the
   teacher (the evaluation's primary score), strict agreement (same calls with
   the same argument JSON, order included), schema validity, seconds per call
   and the mask's cost per generated token;
2. for the schema-constrained answers, each confidence signal's selective
   accuracy (accuracy of the surest 50/60/80%, AURC), on the validation split
   (where signal and floor are chosen) and on the test split (where they are
   judged), and the floor chosen on validation with what it serves on test.

Figures print as tables and append to ``--out`` (JSON lines).
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


def strict_match(pred: dict[str, Any], ref: dict[str, Any]) -> bool:
    """Same calls in the same order with the same argument JSON text (after
    parsing), or the same text: what string comparison would accept."""
    def calls(m: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        for c in m.get("tool_calls") or []:
            fn = c.get("function") or {}
            try:
                args = json.dumps(json.loads(fn.get("arguments") or "{}"))
            except ValueError:
                args = str(fn.get("arguments"))
            out.append((fn.get("name") or "", args))
        return out

    if pred.get("tool_calls") or ref.get("tool_calls"):
        return calls(pred) == calls(ref)
    return (pred.get("content") or "").strip() == (ref.get("content") or "").strip()


def fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def tasks_with_adapters(home: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for task_dir in sorted((home / "artifacts" / "adapters").glob("*")):
        versions = sorted((p for p in task_dir.iterdir() if (p / "adapter_config.json").exists()),
                          key=lambda p: int(p.name) if p.name.isdigit() else 0)
        data = sorted((home / "artifacts" / "datasets" / task_dir.name).glob("v*"))
        if versions and data:
            out.append((task_dir.name, versions[-1], data[-1]))
    return out


def demo_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every bench over a demo home's students shares."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--home", type=Path, default=ROOT / ".protege-demo")
    ap.add_argument("--task", default=None, help="one task id (default: every trained task)")
    return ap


def open_home(home: Path, task: str | None) -> list[tuple[str, Path, Path]]:
    """Point protege at the demo home; its trained tasks (all, or ``task``)."""
    os.environ["PROTEGE_HOME"] = str(home.resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    found = [t for t in tasks_with_adapters(home) if task in (None, t[0])]
    if not found:
        raise SystemExit(f"no trained task under {home}: run `make demo` first")
    return found


def load_task_student(adapter_dir: Path, data_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The task's student, and the settings a second predictor on its model needs."""
    from protege.evaluate.predictors import load_student

    manifest = json.loads((data_dir / "manifest.json").read_text())
    student = load_student(adapter_dir, prefix=manifest.get("prefix"))
    return student, {"prefix": student.prefix, "drop_prefix": student.drop_prefix,
                     "max_new_tokens": student.max_new_tokens, "batch_size": student.batch_size}


def sample_agreement(model: Any, tok: Any, rows: list[dict[str, Any]], greedy: list[dict[str, Any]], k: int,
                     settings: dict[str, Any]) -> list[float]:
    """Share of ``k`` answers sampled at temperature 0.7 equivalent to the greedy one."""
    from protege.evaluate.predictors import TransformersPredictor
    from protege.gateway.student import agree

    hits = [0] * len(rows)
    for seed in range(k):
        import torch

        torch.manual_seed(seed)
        p = TransformersPredictor("sampled", model, tok, temperature=0.7, **settings)
        for i, (a, g) in enumerate(zip(p.predict(rows), greedy, strict=True)):
            hits[i] += int(agree(a, g, rows[i].get("tools")))
    return [h / k for h in hits]


def main() -> None:
    ap = demo_arguments(__doc__)
    ap.add_argument("--samples", type=int, default=0, help="sampled answers per call for the agreement signal")
    ap.add_argument("--limit", type=int, default=None, help="first N test examples only")
    ap.add_argument("--signals-only", action="store_true",
                    help="skip the names-only side: the deferral signals of the schema-constrained answers only")
    ap.add_argument("--out", type=Path, default=Path("/tmp/protege-constrain.jsonl"))
    a = ap.parse_args()
    found = open_home(a.home, a.task)

    from rich.console import Console
    from rich.table import Table

    from protege.datasets import read_jsonl
    from protege.evaluate import selective as S
    from protege.evaluate.gate import GateThresholds
    from protege.evaluate.metrics import tool_call_components
    from protege.evaluate.predictors import TransformersPredictor, adapter_settings
    from protege.models import grammar as G
    from protege.models.confidence import SIGNALS

    con = Console(width=160)
    target = 1.0 - (1.0 - GateThresholds().min_share) / 2
    for task, adapter_dir, data_dir in found:
        test = read_jsonl(data_dir / "test.jsonl")[: a.limit]
        val = read_jsonl(data_dir / "validation.jsonl")[: a.limit]
        student, settings = load_task_student(adapter_dir, data_dir)
        refs = [r["completion"] for r in test]
        tools = [r.get("tools") for r in test]
        result: dict[str, Any] = {"task": task, "adapter": str(adapter_dir), "n_test": len(test), "n_val": len(val)}
        modes: dict[str, Any] = {}
        answers: dict[str, Any] = {}
        for mode in ("schema",) if a.signals_only else ("names", "schema"):
            p = TransformersPredictor("student", student.model, student.tokenizer, constrain=mode, **settings)
            m0, s0 = G.stats["masks"], G.stats["mask_seconds"]
            t0 = time.perf_counter()
            preds = p.predict(test)
            wall = time.perf_counter() - t0
            comps = tool_call_components(preds, refs, tools)
            gen = p.stats["generated_tokens"] or 1
            modes[mode] = {
                "semantic": float(comps["exact"].mean()),
                "strict": sum(strict_match(x, y) for x, y in zip(preds, refs, strict=True)) / len(test),
                "validity": float(comps["valid"].mean()),
                "s_per_call": wall / len(test),
                "ms_per_token": 1000 * wall / gen,
                "mask_ms_per_token": 1000 * (G.stats["mask_seconds"] - s0) / max(1, G.stats["masks"] - m0),
            }
            answers[mode] = (preds, p, comps["exact"])
        result["modes"] = modes
        t = Table(title=f"{task}: decoding constraint, same adapter, test split (n={len(test)})")
        for col in ("constraint", "semantic agreement", "strict agreement", "validity", "s / call",
                    "ms / token", "mask ms / step"):
            t.add_column(col)
        for mode, m in modes.items():
            t.add_row(mode, f"{m['semantic']:.3f}", f"{m['strict']:.3f}", f"{m['validity']:.3f}",
                      f"{m['s_per_call']:.2f}", f"{m['ms_per_token']:.1f}", f"{m['mask_ms_per_token']:.2f}")
        con.print(t)

        preds, p, right = answers["schema"]
        sig_test = {k: [d.get(k) if d else None for d in p.signals] for k in SIGNALS}
        pv = TransformersPredictor("student", student.model, student.tokenizer, constrain="schema", **settings)
        vpreds = pv.predict(val)
        vright = tool_call_components(vpreds, [r["completion"] for r in val], [r.get("tools") for r in val])["exact"]
        sig_val = {k: [d.get(k) if d else None for d in pv.signals] for k in sig_test}
        if a.samples:
            sig_test["sample_agreement"] = sample_agreement(student.model, student.tokenizer, test, preds, a.samples,
                                                            settings)
            sig_val["sample_agreement"] = sample_agreement(student.model, student.tokenizer, val, vpreds, a.samples,
                                                           settings)
        cmp_val, cmp_test = S.compare(sig_val, vright), S.compare(sig_test, right)
        chosen = S.best_signal({k: v for k, v in sig_val.items() if k != "sample_agreement"}, vright)
        t = Table(title=f"{task}: deferral signals (schema-constrained answers), validation n={len(val)} / test")
        for col in ("signal", "AURC val", "AURC test", "acc@50 test", "acc@60 test", "acc@80 test",
                    f"floor (val, >= {target:.3f})", "test: served / right"):
            t.add_column(col)
        signals: dict[str, Any] = {}
        for k in sig_test:
            cut = S.floor_for(sig_val[k], vright, target)
            served = [i for i, c in enumerate(sig_test[k]) if cut is not None and c is not None and c >= cut]
            ok = int(sum(right[i] for i in served))
            signals[k] = {"validation": cmp_val[k], "test": cmp_test[k], "floor": cut,
                          "test_served": len(served), "test_right": ok, "chosen": k == chosen}
            t.add_row(k + (" (chosen)" if k == chosen else ""), fmt(cmp_val[k]["aurc"]), fmt(cmp_test[k]["aurc"]),
                      fmt(cmp_test[k]["acc@50"]), fmt(cmp_test[k]["acc@60"]), fmt(cmp_test[k]["acc@80"]),
                      fmt(cut), f"{len(served)} ({len(served) / len(test):.0%}) / {ok}")
        con.print(t)
        result["signals"] = signals
        result["base"] = adapter_settings(adapter_dir).get("base")
        with a.out.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
