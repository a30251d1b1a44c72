"""From dataset rows to padded batches: tokenise, mask, prune, group by length."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from protege.models.toolcall import TOOL_CALL_OPEN

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    """One training example: prompt ids then answer ids; only the answer carries loss."""

    input_ids: list[int]
    n_prompt: int
    row_id: str = ""
    synthetic: bool = False
    # Earlier answers of the same conversation inside the prompt, (start, end):
    # supervised here instead of as examples of their own (``pack_turns``).
    spans: list[tuple[int, int]] = field(default_factory=list)
    # Each answer's deciding tokens, (start, end): the choice of a call or
    # text and the first call's name (``decision_length``).
    heads: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_answer(self) -> int:
        return len(self.input_ids) - self.n_prompt + sum(e - s for s, e in self.spans)

    def answer_lengths(self) -> list[int]:
        return [len(self.input_ids) - self.n_prompt] + [e - s for s, e in self.spans]

    def labels(self) -> list[int]:
        out = [IGNORE_INDEX] * self.n_prompt + self.input_ids[self.n_prompt :]
        for s, e in self.spans:
            out[s:e] = self.input_ids[s:e]
        return out

    def weights(self, decision_weight: float) -> list[float]:
        """Per token, its weight in the loss: ``decision_weight`` on the deciding tokens, 1 elsewhere."""
        out = [1.0] * len(self.input_ids)
        for s, e in self.heads:
            out[s:e] = [decision_weight] * (e - s)
        return out

    def weighted_answer(self, decision_weight: float) -> float:
        """The answer tokens counted at their loss weights."""
        return self.n_answer + (decision_weight - 1.0) * sum(e - s for s, e in self.heads)


@dataclass
class TokenizeReport:
    kept: int = 0
    skipped_too_long: int = 0
    skipped_empty: int = 0
    prompt_tokens: int = 0
    answer_tokens: int = 0
    skipped_ids: list[str] = field(default_factory=list)


def tokenize_row(
    row: dict[str, Any],
    tokenizer: Any,
    *,
    prefix: dict[str, Any] | None = None,
    drop_prefix: bool = False,
) -> TokenizedExample:
    """Prompt and answer are tokenised apart and concatenated: the split is
    exact (no boundary merge) and matches serving, where the student continues
    from the prompt's ids."""
    from protege.models.toolcall import build_prompt, render_answer

    prompt = build_prompt(
        row.get("messages") or [], row.get("tools"), tokenizer, prefix=prefix, drop_prefix=drop_prefix
    )
    answer = render_answer(row.get("completion") or {}, tokenizer)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    meta = row.get("meta") or {}
    head = decision_length(answer, len(a_ids), tokenizer)
    return TokenizedExample(
        input_ids=list(p_ids) + list(a_ids),
        n_prompt=len(p_ids),
        row_id=str(row.get("id", "")),
        synthetic=bool(meta.get("synthetic")),
        heads=[(len(p_ids), len(p_ids) + head)] if head else [],
    )


_FIRST_NAME = re.compile(r"^\s*" + re.escape(TOOL_CALL_OPEN) + r'\s*\{"name":\s*"(?:[^"\\]|\\.)*"')


def decision_length(answer: str, n_tokens: int, tokenizer: Any) -> int:
    """How many of an answer's first tokens decide what it does, beyond its
    arguments: the first token alone for a text answer (the choice not to
    call; a tool-call metric scores no words), through the first call's name
    for a call. Counted by tokenizing that start of the answer on its own, so
    the boundary may fall one token either side."""
    if n_tokens <= 0:
        return 0
    m = _FIRST_NAME.match(answer)
    if m is None:
        return 1
    return max(1, min(n_tokens, len(tokenizer(m.group(0), add_special_tokens=False)["input_ids"])))


def tokenize_rows(
    rows: Iterable[dict[str, Any]],
    tokenizer: Any,
    *,
    prefix: dict[str, Any] | None = None,
    drop_prefix: bool = False,
    max_length: int = 2048,
) -> tuple[list[TokenizedExample], TokenizeReport]:
    """Tokenise a split. Over-long examples are skipped, not truncated: a cut
    answer would teach the student to stop mid-call."""
    out: list[TokenizedExample] = []
    rep = TokenizeReport()
    for row in rows:
        ex = tokenize_row(row, tokenizer, prefix=prefix, drop_prefix=drop_prefix)
        if ex.n_answer <= 0:
            rep.skipped_empty += 1
            rep.skipped_ids.append(ex.row_id)
            continue
        if len(ex.input_ids) > max_length:
            rep.skipped_too_long += 1
            rep.skipped_ids.append(ex.row_id)
            continue
        out.append(ex)
        rep.kept += 1
        rep.prompt_tokens += ex.n_prompt
        rep.answer_tokens += ex.n_answer
    return out, rep


def fold_hosts(seqs: Sequence[Sequence[int]], key_len: int = 32) -> list[int]:
    """For each token sequence, the index of the longest one it is a token-for-token
    start of (an earlier call of the same agent conversation inside a later
    call's history), or its own index when it starts no longer sequence.
    Hosts are never folded themselves, so every chain ends in one host."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]), reverse=True)
    hosts: dict[tuple[int, ...], list[int]] = {}  # first tokens -> longer sequences kept so far
    out = list(range(len(seqs)))
    for i in order:
        ids = seqs[i]
        for j in hosts.get(tuple(ids[:key_len]), ()):
            other = seqs[j]
            if len(other) > len(ids) and list(other[: len(ids)]) == list(ids):
                out[i] = j
                break
        else:
            hosts.setdefault(tuple(ids[:key_len]), []).append(i)
    return out


def pack_turns(examples: Sequence[TokenizedExample]) -> tuple[list[TokenizedExample], int]:
    """Fold each example that is a token-for-token prefix of a longer one (an
    earlier call of the same agent conversation: its prompt and answer are the
    start of the later call's history) into that longer one as an extra
    supervised span. An agent conversation of k calls then costs one
    sequence instead of k ever-longer ones; the loss sees the same answer
    tokens after the same context. Matching on token ids, not on messages,
    means a template that renders history differently from answers merges
    nothing rather than teaching the wrong thing. Returns (examples, folded)."""
    host_of = fold_hosts([ex.input_ids for ex in examples])
    spans: dict[int, list[tuple[int, int]]] = {}
    heads: dict[int, list[tuple[int, int]]] = {}
    for i, h in enumerate(host_of):
        if h != i:
            ex = examples[i]
            spans.setdefault(h, []).extend([(ex.n_prompt, len(ex.input_ids)), *ex.spans])
            heads.setdefault(h, []).extend(ex.heads)  # a prefix of the host: same positions there
    out = []
    for i, ex in enumerate(examples):
        if host_of[i] != i:
            continue
        if i in spans:
            ex = replace(ex, spans=sorted(ex.spans + spans[i]), heads=sorted(ex.heads + heads[i]))
        out.append(ex)
    return out, sum(1 for i, h in enumerate(host_of) if h != i)


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, mega: int = 16
) -> list[list[int]]:
    """Batches of similar length, in a random but reproducible order.

    Shuffle, cut into mega-batches of ``mega * batch_size``, sort each by
    length and slice: padding nearly vanishes while batches stay mixed across
    the data. Deterministic in (seed, epoch), so a resumed run replays the
    same order.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    step = max(1, mega * batch_size)
    for start in range(0, len(order), step):
        chunk = sorted(order[start : start + step], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[TokenizedExample], pad_id: int, decision_weight: float = 1.0) -> dict[str, Any]:
    """Right-pad to the longest example of the batch; padding carries no loss.
    With a ``decision_weight`` other than 1, per-token loss weights too."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, :n] = torch.tensor(e.labels(), dtype=torch.long)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if decision_weight != 1.0:
        weights = torch.zeros((len(examples), width), dtype=torch.float32)
        for i, e in enumerate(examples):
            weights[i, : len(e.input_ids)] = torch.tensor(e.weights(decision_weight))
        batch["weights"] = weights
    return batch


# -- datasets --------------------------------------------------------------------


@dataclass
class TaskData:
    """A task dataset in memory: the shape ``protege.datasets.load_dataset`` returns."""

    manifest: dict[str, Any]
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None


def load_task_dataset(task_id: str, version: str | None = None) -> Any:
    """The task's dataset (``protege.datasets.load_dataset``)."""
    from protege.datasets import load_dataset

    return load_dataset(task_id, version=version)


def rows_of(split: Any) -> list[dict[str, Any]]:
    """A split as a list of row dicts, whatever container the dataset uses."""
    if split is None:
        return []
    if isinstance(split, list):
        return split
    return [dict(r) if not isinstance(r, dict) else r for r in split]
