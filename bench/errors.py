"""What the demo's students get wrong, by kind, on their test split.

    make demo                                  # once: trains the students in .protege-demo
    .venv/bin/python bench/errors.py           # every trained task of the demo home

Each test answer (greedy, whole answer constrained by the request's schemas,
as the gateway serves) is sorted into: right (semantic equivalence with the
teacher), wrong next tool, wrong arguments (same tools), a call where the
teacher closed the turn or answered in text, text where the teacher called a
tool; split by whether the call follows the user's message or a tool result.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def kind(ref: dict[str, Any], pred: dict[str, Any], right: bool) -> str:
    ref_calls, pred_calls = ref.get("tool_calls") or [], pred.get("tool_calls") or []
    if right:
        return "right"
    if ref_calls and pred_calls:
        names = sorted(c["function"]["name"] for c in ref_calls)
        same = names == sorted(c["function"]["name"] for c in pred_calls)
        return "wrong arguments" if same else "wrong next tool"
    if ref_calls:
        return "text where the teacher called"
    if (ref.get("content") or "").startswith("Done."):
        return "call where the turn was done"
    return "call where the teacher asked or refused"


def main() -> None:
    from constrain import demo_arguments, load_task_student, open_home

    a = demo_arguments(__doc__).parse_args()
    found = open_home(a.home, a.task)
    from rich.console import Console
    from rich.table import Table

    from protege.datasets import read_jsonl
    from protege.evaluate.metrics import tool_call_components
    from protege.evaluate.predictors import TransformersPredictor

    con = Console(width=140)
    for task, adapter_dir, data_dir in found:
        test = read_jsonl(data_dir / "test.jsonl")
        st, settings = load_task_student(adapter_dir, data_dir)
        p = TransformersPredictor("student", st.model, st.tokenizer, constrain="schema", **settings)
        preds = p.predict(test)
        right = tool_call_components(preds, [r["completion"] for r in test], [r.get("tools") for r in test])["exact"]
        counts: Counter[tuple[str, str]] = Counter()
        for r, pred, ok in zip(test, preds, right, strict=True):
            after = "tool result" if r["messages"][-1]["role"] == "tool" else "user message"
            counts[(kind(r["completion"], pred or {}, bool(ok)), after)] += 1
        t = Table(title=f"{task}: test answers by kind (n={len(test)})")
        for col in ("kind", "after a user message", "after a tool result", "all"):
            t.add_column(col)
        for k in sorted({k for k, _ in counts}, key=lambda k: -sum(v for (kk, _), v in counts.items() if kk == k)):
            u, tr = counts[(k, "user message")], counts[(k, "tool result")]
            t.add_row(k, str(u), str(tr), str(u + tr))
        con.print(t)


if __name__ == "__main__":
    main()
