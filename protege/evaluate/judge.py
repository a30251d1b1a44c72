"""Pairwise LLM judge, a teacher model (``protege.teacher.Teacher``): is the
student's answer as good as the teacher's?

Each example is judged twice with the answers in swapped positions, and the
two verdicts are averaged, so a judge that prefers whichever answer comes
first (a well-documented bias) cannot make the student look better or worse.
Per example the student scores 1 (wins both orders), 0.5 (a tie, or a split
decision), 0 (loses both) or anything between; ``None`` when the judge's
replies could not be read at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protege.safejson import json_loads

if TYPE_CHECKING:
    from protege.teacher import Teacher

JUDGE_SYSTEM = (
    "You compare two answers to the same request and decide which one serves the user better: "
    "correct, complete, following the request's format and instructions. Length is not quality. "
    'Reply with JSON only: {"winner": "A"} or {"winner": "B"} or {"winner": "tie"}, '
    'optionally with a short "reason".'
)

_TIE_WORDS = ("tie", "draw", "equal", "equivalent", "same", "both", "neither")


def parse_verdict(text: str | None) -> str | None:
    """ "A", "B" or "tie" from a judge's reply, or None when it says none of them.

    Reads, in order: a JSON object (``winner``/``verdict``/``better``/``choice``
    key), MT-Bench's ``[[A]]``, a bare answer ("A", "tie."), and phrases such
    as "Answer B is better" or "it's a tie". A reply that names both answers
    as better without a clear final choice is unreadable rather than guessed.
    """
    if not text:
        return None
    raw = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", raw, re.S)
    candidates = [fence.group(1)] if fence else []
    candidates += re.findall(r"\{[^{}]*\}", raw)
    for cand in candidates:
        try:
            obj = json_loads(cand)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for key in ("winner", "verdict", "better", "choice", "answer", "result"):
                if key in obj:
                    v = _word(str(obj[key]))
                    if v:
                        return v
    bracket = re.findall(r"\[\[\s*(A|B|C|tie)\s*\]\]", raw, re.I)
    if bracket:
        v = bracket[-1].upper()
        return "tie" if v in ("C", "TIE") else v
    return _word(raw)


def _word(text: str) -> str | None:
    t = text.strip().strip("\"'`*.!").strip()
    low = t.lower()
    if low in ("a", "answer a", "assistant a", "response a"):
        return "A"
    if low in ("b", "answer b", "assistant b", "response b"):
        return "B"
    if any(re.search(rf"\b{w}\b", low) for w in _TIE_WORDS) and not re.search(r"\bnot (a )?tie\b", low):
        if not re.search(r"\b(?:answer|response|assistant)\s+[ab]\s+is\s+(?:better|superior)\b", low):
            return "tie"
    better = set(
        m.upper()
        for m in re.findall(
            r"\b(?:answer|response|assistant|option)\s+([ab])\b\s+(?:is|was)\s+(?:clearly\s+|slightly\s+|much\s+)?(?:better|superior|preferred|the winner)",
            low,
        )
    )
    better |= {
        m.upper() for m in re.findall(r"\b(?:winner|verdict|better answer)\s*(?:is|:)\s*\(?([ab])\b", low)
    }
    if len(better) == 1:
        return better.pop()
    return None


@dataclass(kw_only=True)
class JudgeConfig:
    model: str = field(default="gpt-4o-mini", metadata={"help": "judge model, served by the teacher"})
    max_tokens: int = field(default=200, metadata={"help": "longest judge reply"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature of the judge"})


class Judge:
    """Pairwise judge: a teacher model (``protege.teacher.Teacher``) compares two answers."""

    def __init__(self, teacher: Teacher, config: JudgeConfig | None = None) -> None:
        self.teacher = teacher
        self.config = config or JudgeConfig()
        self.unreadable = 0

    def verdict(self, request_text: str, answer_a: str, answer_b: str) -> str | None:
        prompt = (
            f"[Request]\n{request_text}\n\n[Answer A]\n{answer_a}\n\n[Answer B]\n{answer_b}\n\n"
            "Which answer is better?"
        )
        from protege.teacher import message_of

        resp = self.teacher.complete({
            "model": self.config.model,
            "messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        })
        text = message_of(resp).get("content") or ""
        v = parse_verdict(text)
        if v is None:
            self.unreadable += 1
        return v

    def score(self, request_text: str, student: str, teacher: str) -> float | None:
        """Student's score in [0, 1] from both orders (0.5 = as good as the teacher)."""
        points = []
        first = self.verdict(request_text, student, teacher)  # student is A
        if first is not None:
            points.append({"A": 1.0, "B": 0.0, "tie": 0.5}[first])
        second = self.verdict(request_text, teacher, student)  # student is B
        if second is not None:
            points.append({"A": 0.0, "B": 1.0, "tie": 0.5}[second])
        return sum(points) / len(points) if points else None

    def scores(
        self, requests: Sequence[str], students: Sequence[str], teachers: Sequence[str]
    ) -> list[float | None]:
        return [self.score(q, s, t) for q, s, t in zip(requests, students, teachers, strict=True)]


def request_text(messages: Sequence[dict[str, Any]]) -> str:
    """A plain rendering of a conversation for the judge's prompt."""
    lines = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        lines.append(f"{m.get('role', 'user')}: {content or ''}")
    return "\n".join(lines)
