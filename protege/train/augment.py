"""Synthetic examples for tasks with too few: the teacher paraphrases and answers.

The teacher (``protege.teacher.Teacher``: an OpenAI-compatible endpoint in
production) rewrites a real input in other words, then answers the rewritten conversation with the same tools, as
it would in production. New rows carry ``meta["synthetic"] = True`` and the
id of the row they came from, so evaluation can leave them out.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protege.teacher import Teacher

log = logging.getLogger(__name__)

PARAPHRASE_PROMPT = (
    "Rewrite the user's message below so that it asks for exactly the same thing with the same "
    "facts (names, numbers, dates, identifiers unchanged) but in different words. "
    "Reply with the rewritten message only."
)


@dataclass(kw_only=True)
class AugmentConfig:
    model: str = field(metadata={"help": "Teacher model that paraphrases and answers"})
    target: int = field(default=200, metadata={"help": "Grow the training split to this many rows"})
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature of the paraphrase"})
    seed: int = field(default=0, metadata={"help": "Which source rows are paraphrased, in what order"})
    max_failures: int = field(default=20, metadata={"help": "Give up after this many rejected attempts"})


def _message_of(response: dict[str, Any]) -> dict[str, Any]:
    from protege.teacher import message_of

    if not response.get("choices"):
        raise ValueError("the teacher's answer has no choices")
    return message_of(response)


def _last_user(messages: Sequence[dict[str, Any]]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user" and isinstance(messages[i].get("content"), str):
            return i
    return None


def _kind(message: dict[str, Any]) -> str:
    return "tool_call" if message.get("tool_calls") else "text"


def _clean_completion(message: dict[str, Any]) -> dict[str, Any]:
    calls = []
    for c in message.get("tool_calls") or []:
        fn = c.get("function") or {}
        args = fn.get("arguments")
        calls.append(
            {
                "id": c.get("id") or "",
                "type": "function",
                "function": {
                    "name": fn.get("name"),
                    "arguments": args if isinstance(args, str) else json.dumps(args or {}),
                },
            }
        )
    return {"role": "assistant", "content": message.get("content"), "tool_calls": calls or None}


def augment_rows(rows: Sequence[dict[str, Any]], teacher: Teacher, config: AugmentConfig) -> list[dict[str, Any]]:
    """New synthetic rows (only the new ones) so that ``len(rows) + len(new) >= config.target``.

    ``teacher`` (``protege.teacher.Teacher``) paraphrases and answers.
    A new row is kept only when the answer has the source's shape (a tool call
    where the teacher called a tool, text where it wrote text) and the
    paraphrase differs from the original.
    """
    need = config.target - len(rows)
    sources = [r for r in rows if _last_user(r.get("messages") or []) is not None]
    if need <= 0 or not sources:
        return []
    rng = random.Random(config.seed)
    order = list(range(len(sources)))
    rng.shuffle(order)
    out: list[dict[str, Any]] = []
    failures = 0
    seen: set[str] = set()
    k = 0
    while len(out) < need and failures < config.max_failures:
        src = sources[order[k % len(order)]]
        k += 1
        msgs = copy.deepcopy(src["messages"])
        i = _last_user(msgs)
        assert i is not None
        original = msgs[i]["content"]
        try:
            para = _message_of(
                teacher.complete({
                    "model": config.model,
                    "messages": [
                        {"role": "system", "content": PARAPHRASE_PROMPT},
                        {"role": "user", "content": original},
                    ],
                    "temperature": config.temperature,
                })
            ).get("content")
            para = (para or "").strip()
            if not para or para == original.strip() or para in seen:
                failures += 1
                continue
            msgs[i]["content"] = para
            request: dict[str, Any] = {"model": config.model, "messages": msgs, "temperature": 0}
            if src.get("tools"):
                request["tools"] = src["tools"]
                if src.get("tool_choice") is not None:
                    request["tool_choice"] = src["tool_choice"]
            if src.get("response_format") is not None:
                request["response_format"] = src["response_format"]
            answer = _clean_completion(_message_of(teacher.complete(request)))
        except Exception as exc:  # one failed call must not sink the batch
            log.warning("augmentation call failed: %s", exc)
            failures += 1
            continue
        if _kind(answer) != _kind(src.get("completion") or {}):
            failures += 1
            continue
        seen.add(para)
        digest = hashlib.sha1(f"{src.get('id')}\x00{para}".encode()).hexdigest()[:16]
        meta = dict(src.get("meta") or {})
        meta.update(synthetic=True, source_id=src.get("id"), augment_model=config.model)
        out.append(
            {
                **copy.deepcopy(src),
                "id": f"syn_{digest}",
                "messages": msgs,
                "completion": answer,
                "meta": meta,
            }
        )
    return out
