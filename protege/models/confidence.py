"""How sure a student is of a greedy answer.

Several signals are recorded per answer, each over the tokens the student
chose (after the decoding constraint, so tokens the grammar forces count as
certain and only real choices weigh):

* ``min_prob``: the lowest probability of any chosen token. A tool call is
  wrong when any one of its tokens is (a digit of an amount, a ticker, a key);
* ``mean_logprob``: the mean log-probability of the chosen tokens;
* ``min_margin``: the smallest gap between the chosen token's probability and
  the runner-up's, at any step;
* ``judged_min_prob`` / ``judged_mean_logprob``: the first two over what a
  tool-call task's metric judges. A call is judged on every token; a text
  answer only on the choice not to call (its words are not scored), so its
  figure is the probability, at the first step, of not opening a call.

``bench/students.py`` ranks them by selective accuracy (accuracy at a given
coverage, AURC) and the gate uses the one named in ``SIGNALS[0]`` unless the
evaluation measured another to rank answers better on the validation split
(``protege.evaluate.selective``); the gateway falls back to the teacher below
the adapter's floor on its signal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from protege.models.toolcall import TOOL_CALL_OPEN

SIGNALS = ("min_prob", "mean_logprob", "min_margin", "judged_min_prob", "judged_mean_logprob")


def opens_call(piece: str) -> bool:
    """Whether a token whose text is ``piece`` begins writing a call."""
    return bool(piece) and (TOOL_CALL_OPEN.startswith(piece) or piece.startswith(TOOL_CALL_OPEN))


_OPENERS: dict[tuple[str, int], tuple[int, ...]] = {}


def call_openers(tokenizer: Any) -> tuple[int, ...]:
    """The ids of the tokens that can begin ``<tool_call>`` (cached per tokenizer)."""
    key = (str(getattr(tokenizer, "name_or_path", "")), len(tokenizer))
    if key not in _OPENERS:
        vocab = tokenizer.get_vocab()
        _OPENERS[key] = tuple(sorted(
            i for t, i in vocab.items() if "<" in t and opens_call(tokenizer.convert_tokens_to_string([t]))
        ))
    return _OPENERS[key]


def judged(signals: dict[str, float], text: bool | None, p_call: float | None) -> dict[str, float]:
    """``signals`` with the judged pair added: a text answer (``text``) to a
    request that offered tools scored by ``1 - p_call``, the first step's
    probability of opening a call (None: no tools, or not known); any other
    answer by its plain figures, since all of it is judged."""
    if text and p_call is not None:
        p = min(max(1.0 - p_call, 1e-12), 1.0)
        return {**signals, "judged_min_prob": p, "judged_mean_logprob": math.log(p)}
    return {**signals, "judged_min_prob": signals["min_prob"], "judged_mean_logprob": signals["mean_logprob"]}


def step_recorder(openers: Sequence[int] = (), calls: Sequence[bool | None] | None = None) -> Any:
    """A ``transformers`` logits processor that keeps, per generation step and
    row, the two largest probabilities (greedy decoding picks the first), and
    at the first step the probability of the ``openers`` (the tokens that
    begin a call). ``calls`` per row: True, it may call (default); False, it
    was offered tools but may not call (``tool_choice: none``: no chance of a
    call); None, no tools (a text task, judged whole). It changes no score."""
    import torch
    from transformers import LogitsProcessor

    opener_ids = list(openers)

    def first_step_p_call(p_call: torch.Tensor | None, row: int) -> float | None:
        """The chance of a call at the first step, as ``judged`` takes it."""
        may = True if calls is None or row >= len(calls) else calls[row]
        if may is None or p_call is None:
            return None  # no tools offered, or nothing recorded
        return float(p_call[row]) if may else 0.0

    class _StepProbs(LogitsProcessor):
        def __init__(self) -> None:
            self.steps: list[torch.Tensor] = []  # (rows, 2) per step
            self.p_call: torch.Tensor | None = None  # (rows,) at the first step

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(scores.float(), dim=-1)
            top = probs.topk(min(2, scores.shape[-1]), dim=-1).values
            if top.shape[-1] == 1:
                top = torch.cat([top, torch.zeros_like(top)], dim=-1)
            if not self.steps and openers:
                self.p_call = probs[:, opener_ids].sum(dim=-1).cpu()
            self.steps.append(top.cpu())
            return scores

        def signals(self, row: int, n_steps: int, text: bool | None = None) -> dict[str, float] | None:
            """Every signal of ``SIGNALS`` over the first ``n_steps`` generated
            tokens of ``row``; ``text``: the answer holds no call."""
            n = min(n_steps, len(self.steps))
            if n <= 0:
                return None
            pair = torch.stack([self.steps[k][row] for k in range(n)])
            p1 = pair[:, 0].clamp_min(1e-12)
            plain = {
                "min_prob": float(p1.min()),
                "mean_logprob": float(p1.log().mean()),
                "min_margin": float((pair[:, 0] - pair[:, 1]).min()),
            }
            return judged(plain, text, first_step_p_call(self.p_call, row))

        def confidence(self, row: int, n_steps: int, signal: str = "min_prob") -> float | None:
            sig = self.signals(row, n_steps)
            return None if sig is None else sig[signal]

    return _StepProbs()


def from_logprobs(token_logprobs: Sequence[float | None] | None) -> float | None:
    """The same figure from an OpenAI-style ``logprobs.token_logprobs`` list."""
    vals = [float(x) for x in token_logprobs or [] if x is not None]
    return math.exp(min(vals)) if vals else None


def answer_processors(
    tokenizer: Any,
    tools: Sequence[Any],
    prompt_width: int,
    *,
    constrain: bool | str,
    requests: Sequence[dict[str, Any] | None] | None = None,
) -> tuple[Any, Any]:
    """(logits processors, confidence recorder) for a batch whose rows offer
    ``tools`` (one OpenAI ``tools`` list or None per row).

    ``constrain``: 'schema' (True): the whole answer follows the request's
    tools, ``tool_choice`` and ``response_format`` (``protege.models.grammar``;
    ``requests`` carries the last two per row); 'names': only offered tool
    names may be written, arguments are free; 'off' (False): nothing. The
    constraint runs first, so the recorded confidence is the student's among
    the tokens it may write."""
    from transformers import LogitsProcessorList

    mode = {True: "schema", False: "off"}.get(constrain, constrain)  # type: ignore[call-overload]
    reqs = list(requests) if requests is not None else [None] * len(tools)
    may_call = [None if not t else (r or {}).get("tool_choice") != "none" for t, r in zip(tools, reqs, strict=True)]
    probs = step_recorder(call_openers(tokenizer), may_call)
    processors: list[Any] = [probs]
    names_rows: list[Any] = []
    if mode == "schema":
        from protege.models.grammar import compile_grammar, request_grammar, schema_constraint

        grammars = [compile_grammar(request_grammar(r, t)) for r, t in zip(reqs, tools, strict=True)]
        processors.insert(0, schema_constraint(tokenizer, grammars, prompt_width))
        # Where a schema could not be compiled, still keep the names honest.
        names_rows = [t if g is None else None for t, g in zip(tools, grammars, strict=True)]
    elif mode == "names":
        names_rows = list(tools)
    elif mode != "off":
        raise ValueError(f"unknown constraint {constrain!r} (schema, names, off)")
    if any(names_rows):
        from protege.models.constrain import offered_names, tool_name_constraint

        names = [offered_names(t) if t else None for t in names_rows]
        processors.insert(0, tool_name_constraint(tokenizer, names, prompt_width))
    return LogitsProcessorList(processors), probs
