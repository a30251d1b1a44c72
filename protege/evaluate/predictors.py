"""Who answers the test split: the student, base-model baselines, the teacher.

Everything the runner needs from a system is ``predict(rows) -> list[assistant
message]``; tests inject fakes, the real student wraps transformers + PEFT and
generates with the same prompt builder as training
(``protege.models.toolcall.build_prompt``), greedily, in batches.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

Message = dict[str, Any]


@runtime_checkable
class Predictor(Protocol):
    name: str

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[Message]: ...


class TeacherPredictor:
    """The teacher's own answers: the dataset's references."""

    name = "teacher"

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[Message]:
        return [dict(r["completion"]) for r in rows]


class FunctionPredictor:
    """Any ``fn(row) -> message`` as a predictor (tests, simple heuristics)."""

    def __init__(self, name: str, fn: Callable[[dict[str, Any]], Message]) -> None:
        self.name = name
        self.fn = fn

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[Message]:
        return [self.fn(r) for r in rows]


def few_shot_messages(row: dict[str, Any], shots: Sequence[dict[str, Any]]) -> list[Message]:
    """The row's conversation with solved examples inserted as earlier turns,
    after its system message (the system prompt stays first)."""
    msgs = list(row.get("messages") or [])
    head = [m for m in msgs[:1] if m.get("role") in ("system", "developer")]
    tail = msgs[len(head) :]
    demo: list[Message] = []
    for shot in shots:
        demo += [m for m in shot.get("messages") or [] if m.get("role") not in ("system", "developer")]
        demo.append(shot["completion"])
        # A shot's tool calls need answers before the next user turn, or chat
        # templates that check turn order refuse the conversation.
        for call in shot["completion"].get("tool_calls") or []:
            demo.append({"role": "tool", "tool_call_id": call.get("id"), "content": "ok"})
    return head + demo + tail


class TransformersPredictor:
    """Greedy batched generation with a causal LM (optionally a PEFT adapter on it).

    Prompts come from ``protege.models.toolcall.build_prompt`` and answers are
    parsed with ``parse_completion``, the code training and serving use, so
    the evaluation sees the student exactly as production will.
    """

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        *,
        prefix: dict[str, Any] | None = None,
        drop_prefix: bool = False,
        shots: Sequence[dict[str, Any]] = (),
        batch_size: int = 8,
        max_new_tokens: int = 256,
        progress: Callable[[int], None] | None = None,
        constrain: bool | str = "schema",
        temperature: float = 0.0,
        verify: bool = True,
    ) -> None:
        self.name = name
        # Greedy answers that are the teacher's answer are confirmed in one
        # forward pass per conversation instead of generated (``verify_drafts``).
        self.verify = verify
        # 0: greedy, as the gateway serves; above 0, sampled (agreement among
        # samples as a confidence signal, ``bench/constrain.py``).
        self.temperature = temperature
        # As the embedded engine serves: answers follow the request's schemas (``protege.models.grammar``).
        self.constrain = constrain
        self.model = model
        self.tokenizer = tokenizer
        self.prefix = prefix
        self.drop_prefix = drop_prefix
        self.shots = list(shots)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        # Generation only in seconds / calls / generated_tokens (what serving
        # costs); confirmed drafts in verified / verify_seconds / verify_passes.
        self.stats: dict[str, float] = {"seconds": 0.0, "generated_tokens": 0, "calls": 0, "verified": 0,
                                        "verify_seconds": 0.0, "verify_passes": 0}
        # Per answer of the last ``predict`` call, in its order: the lowest
        # probability of any generated token (``protege.models.confidence``).
        self.confidences: list[float | None] = []
        # Every signal of ``protege.models.confidence.SIGNALS`` per answer.
        self.signals: list[dict[str, float] | None] = []
        # The generated token ids per answer (None where a draft was confirmed).
        self.answer_ids: list[list[int] | None] = []

    @property
    def device(self) -> str:
        try:
            return str(next(self.model.parameters()).device)
        except (StopIteration, AttributeError, TypeError):
            return "cpu"

    def _prompt(self, row: dict[str, Any]) -> str:
        from protege.models.toolcall import build_prompt

        messages = few_shot_messages(row, self.shots) if self.shots else row.get("messages") or []
        return build_prompt(
            messages, row.get("tools"), self.tokenizer, prefix=self.prefix, drop_prefix=self.drop_prefix
        )

    def _stops(self) -> set[int]:
        tok = self.tokenizer
        return {
            t
            for t in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"))
            if isinstance(t, int) and t >= 0
        }

    def _answer(self, ids: list[int], probs: Any, row: int) -> tuple[Message, dict[str, float] | None]:
        """The parsed answer and its confidence signals from generated ``ids``."""
        from protege.models.toolcall import parse_completion

        tok = self.tokenizer
        n = len(ids)
        while n and ids[n - 1] == tok.pad_token_id:
            n -= 1
        # The stop token counts (stopping too early is an error too); a pad
        # token doubling as EOS was trimmed above, so look in ``ids``.
        eos = self._stops()
        stop = next((k for k, t in enumerate(ids) if t in eos or t == tok.pad_token_id), None)
        message = parse_completion(tok.decode(ids[:n], skip_special_tokens=False))
        return message, probs.signals(row, stop + 1 if stop is not None else len(ids),
                                      text=not message.get("tool_calls"))

    def drafts(self, rows: Sequence[dict[str, Any]]) -> list[list[int]]:
        """Each row's teacher answer as the student would write it: token ids
        of the training target, end of turn included (empty without one)."""
        from protege.models.toolcall import render_answer

        tok = self.tokenizer
        return [tok(render_answer(r["completion"], tok), add_special_tokens=False)["input_ids"]
                if r.get("completion") else [] for r in rows]

    def verify_drafts(self, rows: Sequence[dict[str, Any]], prompts: Sequence[str | list[int]],
                      drafts: Sequence[list[int]]) -> dict[int, tuple[Message, Any]]:
        """The rows whose greedy answer is their draft, found without generating.

        As speculative decoding checks a draft, the teacher's answer is the
        draft: one forward pass over a conversation gives the student's
        next-token scores at every position of every answer in it (its calls
        fold into the longest one, ``fold_hosts``); stepping the same logits
        processors through the draft, the greedy token must be the draft's at
        each step, its end of turn included. Where it is, greedy generation
        would have written exactly the draft, with the same recorded
        probabilities; where it is not, the row is generated as usual.
        Returns {row index: (message, signals)} for the confirmed rows."""
        import torch

        from protege.models.confidence import answer_processors
        from protege.train.data import fold_hosts

        tok = self.tokenizer
        eos = self._stops()
        parts = [(list(p) if isinstance(p, list) else tok(p, add_special_tokens=False)["input_ids"], list(a))
                 for p, a in zip(prompts, drafts, strict=True)]
        seqs = [p + a for p, a in parts]
        members: dict[int, list[int]] = {}
        for i, h in enumerate(fold_hosts(seqs)):
            a = parts[i][1]
            # A draft that does not end the turn, or that generation would cut, is never confirmed.
            if a and a[-1] in eos and len(a) <= self.max_new_tokens:
                members.setdefault(h, []).append(i)
        done: dict[int, tuple[Message, Any]] = {}
        for host, rows_in in members.items():
            # Scores at the position before each draft token (the prompt's last one first).
            positions = sorted({k for i in rows_in for k in range(len(parts[i][0]) - 1, len(seqs[i]) - 1)})
            at = {k: j for j, k in enumerate(positions)}
            ids = torch.tensor([seqs[host]], dtype=torch.long, device=self.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                keep = torch.tensor(positions, device=ids.device)
                # As ``generate`` hands scores to the processors: float32.
                logits = self.model(input_ids=ids, logits_to_keep=keep).logits[0].float()
                for i in rows_in:
                    p, a = parts[i]
                    processors, probs = answer_processors(
                        tok, [rows[i].get("tools")], len(p), constrain=self.constrain, requests=[rows[i]]
                    )
                    for t, want in enumerate(a):
                        scores = processors(ids[:, : len(p) + t], logits[at[len(p) - 1 + t]].unsqueeze(0).clone())
                        if int(scores[0].argmax()) != want:
                            break
                    else:
                        done[i] = self._answer(a, probs, 0)
            self.stats["verify_seconds"] += time.perf_counter() - t0
            self.stats["verify_passes"] += 1
        self.stats["verified"] += len(done)
        return done

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[Message]:
        import torch

        from protege.models.confidence import answer_processors

        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
        prompts = [self._prompt(r) for r in rows]
        out: list[Message | None] = [None] * len(prompts)
        conf: list[float | None] = [None] * len(prompts)
        sigs: list[dict[str, float] | None] = [None] * len(prompts)
        ids_out: list[list[int] | None] = [None] * len(prompts)
        self.model.eval()
        todo = list(range(len(prompts)))
        if self.verify and self.temperature <= 0 and not self.shots:
            for i, (message, signals) in self.verify_drafts(rows, prompts, self.drafts(rows)).items():
                out[i], sigs[i] = message, signals
                conf[i] = None if signals is None else signals["min_prob"]
            todo = [i for i in todo if out[i] is None]
            if self.progress and len(prompts) > len(todo):
                self.progress(len(prompts) - len(todo))
        # Length-sorted batches waste less compute on padding; answers go back
        # in the caller's order.
        order = sorted(todo, key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            t0 = time.perf_counter()
            processors, probs = answer_processors(
                tok, [rows[i].get("tools") for i in idx], enc["input_ids"].shape[1],
                constrain=self.constrain, requests=[rows[i] for i in idx],
            )
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=self.temperature > 0,
                    **({"temperature": self.temperature, "top_p": 1.0} if self.temperature > 0 else {}),
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=sorted(self._stops()) or None,
                    logits_processor=processors,
                )
            self.stats["seconds"] += time.perf_counter() - t0
            new = gen[:, enc["input_ids"].shape[1] :]
            for j, i in enumerate(idx):
                ids = ids_out[i] = new[j].tolist()
                self.stats["generated_tokens"] += sum(1 for t in ids if t != tok.pad_token_id)
                out[i], sigs[i] = self._answer(ids, probs, j)
                conf[i] = None if sigs[i] is None else sigs[i]["min_prob"]
            self.stats["calls"] += len(idx)
            if self.progress:
                self.progress(len(idx))
        self.confidences = conf
        self.signals = sigs
        self.answer_ids = ids_out
        return [m or {"role": "assistant", "content": None, "tool_calls": None} for m in out]


# --------------------------------------------------------------------------- loading


def _split_loaded(loaded: Any) -> tuple[Any, Any]:
    if isinstance(loaded, tuple):
        return loaded[0], loaded[1]
    return loaded.model, loaded.tokenizer


def load_base_model(name: str) -> tuple[Any, Any]:
    """(model, tokenizer) for a catalog name or hub id, through the project's loader."""
    from protege.models.loader import inference_dtype, load_base

    return _split_loaded(load_base(name, dtype=inference_dtype()))


# Written by protege's trainer next to the adapter weights.
ADAPTER_METADATA = "protege_adapter.json"


def adapter_settings(adapter_dir: Path) -> dict[str, Any]:
    """Base model and prompt settings an adapter was trained with, from its
    directory: protege's training record where there is one, PEFT's
    ``adapter_config.json`` otherwise."""
    out: dict[str, Any] = {}
    peft_cfg = adapter_dir / "adapter_config.json"
    if peft_cfg.exists():
        out["base"] = json.loads(peft_cfg.read_text()).get("base_model_name_or_path")
    meta_path = adapter_dir / ADAPTER_METADATA
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        cfg = meta.get("config") or {}
        if meta.get("base_model"):
            out["base"] = meta["base_model"]
        if meta.get("drop_prefix") is not None:
            out["drop_prefix"] = bool(meta["drop_prefix"])
        if meta.get("prefix") is not None:
            out["prefix"] = meta["prefix"]
        if cfg.get("max_new_tokens"):
            out["max_new_tokens"] = int(cfg["max_new_tokens"])
    return out


def load_student(adapter_dir: Path, *, base: str | None = None, **kwargs: Any) -> TransformersPredictor:
    """Base model + LoRA adapter from ``adapter_dir``, ready to predict."""
    from peft import PeftModel

    settings = adapter_settings(adapter_dir)
    base = base or settings.get("base")
    if not base:
        raise ValueError(f"{adapter_dir}: cannot tell the adapter's base model (no adapter_config.json)")
    model, tokenizer = load_base_model(base)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    # The prompt must be built exactly as in training: same prefix, same pruning.
    for key, default in (("drop_prefix", False), ("prefix", None), ("max_new_tokens", 256)):
        if kwargs.get(key) is None:
            kwargs[key] = settings.get(key, default)
    return TransformersPredictor("student", model, tokenizer, **kwargs)
