"""Tool names the student may write: only those the request offers.

A small student that has learnt the shape of a call but not yet every name
invents plausible ones (``activate``, ``engage``); the gateway would refuse
such an answer and pay for the teacher too. While the student is writing the
``"name": "`` of a call, this logits processor keeps only tokens that continue
one of the offered names (or close it), so every call names a real tool and
the student's own preference among them decides which. Arguments are left
free: they are checked against the tool's schema after generation.

Evaluation and the embedded engine both use it, so the gate measures the
student as it serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NAME_KEY = '"name": "'


def offered_names(tools: Sequence[dict[str, Any]] | None) -> list[str]:
    out = []
    for t in tools or []:
        fn = (t.get("function") or {}) if isinstance(t, dict) else {}
        if fn.get("name"):
            out.append(str(fn["name"]))
    return out


def open_name(text: str) -> str | None:
    """The part of a tool name being written at the end of ``text``, or None
    when the text is not inside a call's name."""
    i = text.rfind(NAME_KEY)
    if i < 0 or "<tool_call>" not in text[:i]:
        return None
    rest = text[i + len(NAME_KEY) :]
    return None if '"' in rest else rest


def tool_name_constraint(tokenizer: Any, names: Sequence[Sequence[str] | None], prompt_width: int,
                         top_k: int = 64) -> Any:
    """A ``transformers`` logits processor for a batch: row ``i`` may only
    write the names in ``names[i]`` (None or empty: unconstrained).
    ``prompt_width`` is where generated tokens start in ``input_ids``."""
    import torch
    from transformers import LogitsProcessor

    class _ToolNames(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            for row in range(input_ids.shape[0]):
                allowed_names = names[row] if row < len(names) else None
                if not allowed_names:
                    continue
                text = tokenizer.decode(input_ids[row, prompt_width:].tolist(), skip_special_tokens=False)
                part = open_name(text)
                if part is None:
                    continue
                targets = [n + '"' for n in allowed_names if (n + '"').startswith(part)]
                if not targets:
                    continue  # already off every name: validation will refuse the answer
                allowed: list[int] = []
                for t in torch.topk(scores[row], min(top_k, scores.shape[-1])).indices.tolist():
                    s = part + tokenizer.decode([t])
                    if any(g.startswith(s) or s.startswith(g) for g in targets):
                        allowed.append(t)
                if not allowed:  # none of the likely tokens fits: the first token of each name's rest
                    for g in targets:
                        ids = tokenizer(g[len(part) :], add_special_tokens=False)["input_ids"]
                        if ids:
                            allowed.append(int(ids[0]))
                keep = torch.full_like(scores[row], float("-inf"))
                idx = torch.tensor(sorted(set(allowed)), dtype=torch.long, device=scores.device)
                keep[idx] = scores[row, idx]
                scores[row] = keep
            return scores

    return _ToolNames()
