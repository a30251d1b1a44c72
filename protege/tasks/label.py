"""Readable task labels (class-based TF-IDF), output types and the
specialisation score that says whether a task is worth a student."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from protege.tasks.features import CallFeatures

_WORD = re.compile(r"[a-zA-Z][a-zA-Z]{2,}")
# The paper's rule of thumb: 10k-100k examples make a task worth fine-tuning.
VOLUME_LOW, VOLUME_HIGH = 100, 10_000


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | {"please", "help", "want", "need", "make", "sure", "let", "like"}


def ctfidf_keywords(docs_per_class: Sequence[Sequence[str]], top: int = 4) -> list[list[str]]:
    """Top words per class by class-based TF-IDF (BERTopic's c-TF-IDF):
    tf of the word in the class x log(1 + average class size / word frequency
    over all classes), so words common everywhere sink."""
    stop = _stop_words()
    counts = []
    for docs in docs_per_class:
        c: Counter[str] = Counter()
        for d in docs:
            c.update(w for w in (m.lower() for m in _WORD.findall(d)) if w not in stop)
        counts.append(c)
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    avg = sum(total.values()) / max(1, len(counts))
    out = []
    for c in counts:
        n = sum(c.values()) or 1
        scored = sorted(c, key=lambda w: (-(c[w] / n) * math.log(1 + avg / total[w]), w))
        out.append(scored[:top])
    return out


# A share of tool calls that makes a task a tool-calling one whatever the rest
# is: an agent step that speaks (a turn's closing reply, a question back) is
# one of that job's answers, often the commoner one, not another kind of task.
TOOL_CALL_SHARE = 0.25


def output_type(feats: Sequence[CallFeatures]) -> str:
    """tool_call when at least ``TOOL_CALL_SHARE`` of the answers call a tool,
    else json | label | text by majority; free text whose answers are few
    distinct short strings is a closed-set label."""
    kinds = Counter(f.output_type for f in feats)
    if kinds and kinds["tool_call"] >= TOOL_CALL_SHARE * sum(kinds.values()):
        return "tool_call"
    kind = kinds.most_common(1)[0][0] if kinds else "text"
    if kind != "text":
        return kind
    answers = [f.answer.strip().lower() for f in feats if f.output_type == "text"]
    distinct = set(answers)
    short = sum(len(a.split()) <= 4 for a in answers) >= 0.9 * len(answers)
    if len(answers) >= 5 and short and len(distinct) <= max(2, min(30, len(answers) // 5)):
        return "label"
    return "text"


def _pct(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return float(values[min(len(values) - 1, int(math.ceil(q * len(values))) - 1)])


def token_stats(feats: Sequence[CallFeatures]) -> dict[str, float]:
    p = [f.prompt_tokens for f in feats if f.prompt_tokens is not None]
    c = [f.completion_tokens for f in feats if f.completion_tokens is not None]
    return {
        "prompt_mean": round(sum(p) / len(p), 1) if p else 0.0,
        "prompt_p95": _pct(p, 0.95),
        "completion_mean": round(sum(c) / len(c), 1) if c else 0.0,
        "completion_p95": _pct(c, 0.95),
    }


def _structure(f: CallFeatures) -> str:
    if f.output_type == "tool_call":
        return "call:" + ",".join(f.called)
    if f.output_type == "json":
        return "json:" + ",".join(sorted(re.findall(r'"(\w+)":', f.answer)[:20]))
    return "text:" + f.answer.strip().lower()[:40]


def determinism(feats: Sequence[CallFeatures], kind: str) -> tuple[float, str]:
    """How predictable the answers are, in [0, 1], and how it was measured.

    Identical inputs seen more than once: the share of them that got the same
    answer every time. Otherwise the structure of the outputs: 1 - normalised
    entropy of their shapes (tools called, JSON keys, label value); free text
    counts as open-ended."""
    by_input: dict[str, set[str]] = {}
    seen: Counter[str] = Counter()
    for f in feats:
        seen[f.input_key] += 1
        by_input.setdefault(f.input_key, set()).add(f.answer)
    repeated = [k for k, n in seen.items() if n > 1]
    if len(repeated) >= 5:
        same = sum(len(by_input[k]) == 1 for k in repeated) / len(repeated)
        return same, f"identical answers for {len(repeated)} repeated inputs"
    if kind == "text":
        return 0.25, "free text is open-ended"
    shapes = Counter(_structure(f) for f in feats)
    n = sum(shapes.values())
    if len(shapes) <= 1 or n <= 1:
        return 1.0, "one output shape"
    entropy = -sum(c / n * math.log(c / n) for c in shapes.values())
    norm = entropy / math.log(min(n, max(len(shapes), 2)))
    return max(0.0, 1.0 - norm * 0.8), f"{len(shapes)} output shapes over {n} answers"


def specialisation(n: int, det: float, cost_share: float) -> tuple[float, dict[str, float]]:
    """0-1 score: is this task worth training a student for?

    volume (45%): log-scaled from 100 (0) to 10k (1) examples, the paper's
    10k-100k rule of thumb; determinism (35%): predictable answers are what a
    small model learns well; cost (20%): share of spend it would take over,
    saturating at 20%."""
    volume = min(1.0, max(0.0, (math.log10(max(n, 1)) - math.log10(VOLUME_LOW)) / (
        math.log10(VOLUME_HIGH) - math.log10(VOLUME_LOW))))
    cost = min(1.0, cost_share / 0.2)
    score = 0.45 * volume + 0.35 * det + 0.2 * cost
    return round(score, 3), {"volume": round(volume, 3), "determinism": round(det, 3), "cost": round(cost, 3)}


def verdict(score: float) -> str:
    if score >= 0.6:
        return "good candidate for a student"
    if score >= 0.4:
        return "possible: collect more traffic"
    return "keep on the large model for now"


_CAMEL_SPLIT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def slug(text: str, limit: int = 40) -> str:
    """'VehicleControlAPI' -> 'vehicle-control-api'."""
    s = _NON_WORD.sub("-", _CAMEL_SPLIT.sub(" ", text).lower()).strip("-")
    return s[:limit].rstrip("-")


def _step(feats: Sequence[CallFeatures], kind: str, own_tools: float) -> str:
    """What the calls produce: the one tool filled, the next step of a tool
    loop, functions the requests bring, or the output kind."""
    if kind != "tool_call":
        return {"json": "json", "label": "label"}.get(kind, "text")
    if own_tools >= 0.5:
        return "own functions"
    called = Counter(n for f in feats for n in f.called)
    if len(called) == 1 and all(not f.history for f in feats):
        return next(iter(called))
    return "next step"


def task_name(feats: Sequence[CallFeatures], *, kind: str, own_tools: float, keywords: Sequence[str]) -> str:
    """A readable name from what identifies a task: its call-site tag, else the
    role its system prompt gives (``trading-bot · next step``), else what its
    instructions are about, then the step (``next step``, the one tool it fills,
    ``own functions`` when requests bring their own, or the output kind)."""
    tags = Counter(f.tag for f in feats if f.tag)
    if tags:
        return tags.most_common(1)[0][0]
    agents = Counter(f.agent for f in feats if f.agent)
    who = slug(agents.most_common(1)[0][0]) if agents else "-".join(slug(w) for w in keywords[:2])
    what = _step(feats, kind, own_tools)
    return f"{who} · {what}" if who else what


def unique_names(names: Sequence[str], taken: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Names made unique in order (the first keeps the plain name, later ones
    get ' #2', ' #3', ...), also against names already ``taken``."""
    used = set(taken)
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name} #{n}"
        used.add(candidate)
        out.append(candidate)
    return out
