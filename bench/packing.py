"""Packed agent conversations against one example per call, same epochs.

    .venv/bin/python bench/packing.py                 # VehicleControlAPI suite (~15 min)
    .venv/bin/python bench/packing.py --epochs 1 --packed-epochs 1 --suite TradingBot

Data: the BFCL multi-turn entries of one API suite rendered as agent traffic
(``protege.importers.bfcl``: every LLM call of a conversation sends the whole
history back), teacher answers = BFCL ground truth; conversations split
train / test. Base model: SmolLM2-135M-Instruct (offline GGUF), the task's
static prefix (system prompt, tool schemas) dropped as the flywheel does.

Both sides train the same LoRA from the same seed over the same answers, in
batches of the same number of sequences; they differ only in ``pack_turns``
and in how many epochs they get: packed, an epoch is several times cheaper but
makes several times fewer optimizer steps, so the fair comparison is at about
equal training time (``--packed-epochs``, default 5x ``--epochs``), with the
same-epochs figures printed too:

* packed: an earlier call whose prompt and answer are, token for token, the
  start of a later call's prompt is supervised inside that later sequence;
* one example per call: every call is its own sequence, its history repeated.

Reported: training tokens and wall time, and the answer-token loss on the
held-out conversations (teacher forcing, each call on its own) after training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def suite_rows(suite: str) -> list[dict[str, Any]]:
    from protege.importers import bfcl as B

    cfg = B.BfclImportConfig()
    rows = []
    for index, (source, entry) in enumerate(B.category_entries("multi_turn_base")):
        if sorted(entry["involved_classes"]) != [suite]:
            continue
        for k, ex in enumerate(B.entry_exchanges("multi_turn_base", entry, index, cfg, source)):
            msg = ex.response["choices"][0]["message"]
            rows.append({"id": f"{entry['id']}-{k}", "conversation": entry["id"],
                         "messages": ex.request["messages"], "tools": ex.request.get("tools"),
                         "completion": {k2: msg.get(k2) for k2 in ("role", "content", "tool_calls")}})
    return rows


def answer_loss(model: Any, tokenizer: Any, rows: list[dict[str, Any]], prefix: dict[str, Any]) -> float:
    """Mean loss per answer token over ``rows``, each call with its own prompt."""
    import torch

    from protege.train.data import tokenize_rows

    examples, _ = tokenize_rows(rows, tokenizer, prefix=prefix, drop_prefix=True, max_length=4096)
    total = n = 0.0
    model.eval()
    with torch.inference_mode():
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            labels = torch.tensor([ex.labels()])
            out = model(input_ids=ids, labels=labels)
            k = ex.n_answer
            total += float(out.loss) * k
            n += k
    return total / max(n, 1.0)


def run_side(packed: bool, train: list[dict[str, Any]], test: list[dict[str, Any]], prefix: dict[str, Any],
             epochs: float, batch: int, home: Path) -> dict[str, Any]:
    import os

    os.environ["PROTEGE_HOME"] = str(home)
    from protege.train import TaskData, TrainConfig, train_adapter

    ds = TaskData({"output_type": "tool_call", "prefix": prefix, "version": "v1", "hash": "bench"},
                  train, [], test)
    cfg = TrainConfig(base="smollm2-135m-instruct", epochs=epochs, batch_size=batch, max_length=4096,
                      pack_turns=packed, eval_every=10**9, max_eval_examples=0, seed=0)
    t0 = time.perf_counter()
    res = train_adapter("bench-packing", config=cfg, dataset=ds)
    wall = time.perf_counter() - t0
    m = res.metrics
    from protege.evaluate.predictors import load_student

    student = load_student(Path(res.adapter_dir))
    loss = answer_loss(student.model, student.tokenizer, test, prefix)
    return {"packed": packed, "sequences": m.get("train_sequences"), "answers": m.get("train_examples"),
            "steps": m["steps"], "tokens": m["tokens"], "train_time_s": m["train_time_s"], "wall_s": round(wall, 1),
            "test_answer_loss": round(loss, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default="VehicleControlAPI")
    ap.add_argument("--epochs", type=float, default=2.0, help="epochs of the one-example-per-call side")
    ap.add_argument("--packed-epochs", type=float, default=None,
                    help="epochs of the packed side (default: 5x --epochs, about the same training time)")
    ap.add_argument("--batch", type=int, default=2, help="sequences per optimizer step, both sides")
    ap.add_argument("--test-share", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    from protege.datasets.prefix import detect_prefix

    rows = suite_rows(a.suite)
    convs = sorted({r["conversation"] for r in rows})
    cut = int(len(convs) * (1 - a.test_share))
    train = [r for r in rows if r["conversation"] in convs[:cut]]
    test = [r for r in rows if r["conversation"] in convs[cut:]]
    prefix = detect_prefix(train)
    print(f"{a.suite}: {len(convs)} conversations, {len(train)} train calls, {len(test)} test calls")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # The model cache is shared with the demo's when there is one (a cold cache costs ~20 s per side).
        home = Path(tmp)
        cache = ROOT / ".protege-demo" / "models"
        if cache.exists():
            (home / "models").symlink_to(cache)
        packed_epochs = a.packed_epochs if a.packed_epochs is not None else 5 * a.epochs
        for packed, epochs in ((True, a.epochs), (True, packed_epochs), (False, a.epochs)):
            if packed and epochs == a.epochs and any(r["packed"] and r["epochs"] == epochs for r in results):
                continue
            r = run_side(packed, train, test, prefix, epochs, a.batch, home)
            r["epochs"] = epochs
            results.append(r)
            print(json.dumps(r))
    u = results[-1]
    p = results[-2]  # the packed run with about the unpacked side's time
    print()
    print("| side | epochs | sequences | steps | training tokens | train time | test answer loss |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        name = "packed (protege)" if r["packed"] else "one example per call"
        print(f"| {name} | {r['epochs']:g} | {r['sequences']} | {r['steps']} | {r['tokens']:,} | "
              f"{r['train_time_s']:.0f} s | {r['test_answer_loss']:.3f} |")
    same = results[0]
    print(f"\nsame epochs: {u['tokens'] / same['tokens']:.1f}x fewer tokens and "
          f"{u['train_time_s'] / same['train_time_s']:.1f}x less time packed, but {same['steps']} steps against "
          f"{u['steps']} (test loss {same['test_answer_loss']:.3f} vs {u['test_answer_loss']:.3f}); "
          f"{p['epochs']:g} packed epochs in {p['train_time_s']:.0f} s against {u['train_time_s']:.0f} s: "
          f"test loss {p['test_answer_loss']:.3f} vs {u['test_answer_loss']:.3f}")
    if a.out:
        a.out.write_text(json.dumps({"suite": a.suite, "epochs": a.epochs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
