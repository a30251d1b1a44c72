"""How sure a student is of a greedy answer: the lowest probability it gave
any token it generated.

A tool call is wrong when any one of its tokens is (a digit of an amount, a
ticker, a key), so the weakest token, not the average, is what separates
answers to serve from answers to send to the teacher. The gate picks the
floor per adapter on held-out examples (``protege.evaluate.gate``); the
gateway falls back to the teacher below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def step_recorder() -> Any:
    """A ``transformers`` logits processor that keeps, per generation step and
    row, the probability of the token greedy decoding is about to pick (the
    largest one). It changes no score."""
    import torch
    from transformers import LogitsProcessor

    class _StepProbs(LogitsProcessor):
        def __init__(self) -> None:
            self.steps: list[torch.Tensor] = []

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            self.steps.append(torch.softmax(scores.float(), dim=-1).amax(dim=-1).cpu())
            return scores

        def confidence(self, row: int, n_steps: int) -> float | None:
            """Lowest probability over the first ``n_steps`` generated tokens of ``row``."""
            n = min(n_steps, len(self.steps))
            if n <= 0:
                return None
            return float(min(float(self.steps[k][row]) for k in range(n)))

    return _StepProbs()


def from_logprobs(token_logprobs: Sequence[float | None] | None) -> float | None:
    """The same figure from an OpenAI-style ``logprobs.token_logprobs`` list."""
    vals = [float(x) for x in token_logprobs or [] if x is not None]
    return math.exp(min(vals)) if vals else None


def answer_processors(tokenizer: Any, tools: Sequence[Any], prompt_width: int, *, constrain: bool) -> tuple[Any, Any]:
    """(logits processors, confidence recorder) for a batch whose rows offer
    ``tools`` (one OpenAI ``tools`` list or None per row). With ``constrain``
    only offered tool names may be written; that runs first, so the recorded
    confidence is the student's among the names it may write."""
    from transformers import LogitsProcessorList

    probs = step_recorder()
    processors: list[Any] = [probs]
    if constrain:
        from protege.models.constrain import offered_names, tool_name_constraint

        names = [offered_names(t) for t in tools]
        processors.insert(0, tool_name_constraint(tokenizer, names, prompt_width))
    return LogitsProcessorList(processors), probs
