"""Every answer of an evaluation, kept beside its report.

A share of 0.57 says that a student falls short, not where. Each evaluation
writes one JSON line per test example (the turn answered, the reference, the
student's and the teacher's answers, the verdicts and the confidence signals)
to ``artifacts/evaluations/<task>/<evaluation id>.answers.jsonl``;
``protege answers TASK`` lists them, the misses first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protege.config import artifacts_dir

__all__ = ["answers_path", "build_answers", "read_answers", "write_answers"]

_TURN_CHARS = 600  # enough of the turn to recognise it; the dataset has the rest


def answers_path(task_id: str, evaluation_id: str) -> Path:
    return artifacts_dir() / "evaluations" / task_id / f"{evaluation_id}.answers.jsonl"


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _turn(row: dict[str, Any]) -> dict[str, str]:
    """The message the answer replies to (the user's request or a tool's result)."""
    from protege.models.toolcall import content_text

    msgs = [m for m in row.get("messages") or [] if m.get("role") not in ("system", "developer")]
    if not msgs:
        return {"role": "", "content": ""}
    last = msgs[-1]
    return {"role": str(last.get("role") or ""), "content": content_text(last.get("content"))[:_TURN_CHARS]}


def _answer(message: dict[str, Any] | None) -> dict[str, Any] | None:
    """An answer as a reader wants it: text and calls with their arguments parsed."""
    if message is None:
        return None
    from protege.models.toolcall import content_text

    calls = []
    for c in message.get("tool_calls") or []:
        fn = c.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                pass  # the student's invalid JSON, shown as written
        calls.append({"name": fn.get("name"), "arguments": args})
    out: dict[str, Any] = {}
    text = content_text(message.get("content"))
    if text:
        out["content"] = text
    if calls:
        out["tool_calls"] = calls
    return out


def build_answers(
    rows: Sequence[dict[str, Any]],
    predictions: dict[str, Sequence[dict[str, Any] | None]],
    per_example: dict[str, dict[str, Any]],
    basis: str,
    signals: dict[str, Sequence[float | None]] | None = None,
) -> list[dict[str, Any]]:
    """One record per test row: the verdicts are on ``basis`` (the gate's)."""
    out = []
    for i, row in enumerate(rows):
        rec: dict[str, Any] = {
            "example": row.get("id"),
            "session_id": row.get("session_id"),
            "turn": _turn(row),
            "reference": _answer(row.get("completion")),
        }
        for system in ("student", "teacher"):
            if system in predictions:
                rec[system] = _answer(predictions[system][i])
            scores = {k: v for k, v in (per_example.get(system) or {}).items() if k != "valid"}
            if basis in scores:
                rec[f"{system}_right"] = _num(scores[basis][i])
            if len(scores) > 1:  # against the reference and against ground truth
                rec[f"{system}_scores"] = {k: _num(v[i]) for k, v in scores.items()}
        if "valid" in (per_example.get("student") or {}):
            rec["student_valid"] = _num(per_example["student"]["valid"][i])
        if signals:
            rec["signals"] = {k: _num(v[i]) for k, v in signals.items() if i < len(v)}
        out.append(rec)
    return out


def write_answers(task_id: str, evaluation_id: str, answers: Sequence[dict[str, Any]]) -> Path:
    path = answers_path(task_id, evaluation_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for a in answers:
            f.write(json.dumps(a, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
    return path


def read_answers(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
