"""Selective prediction: how well a confidence signal ranks a student's right
answers above its wrong ones, and the floor a gateway serves above.

A student serves the answers it is sure of and defers the rest to the
teacher, so what matters in a signal is its ranking: the accuracy of the
answers it would serve at a given coverage, and the area under the
risk-coverage curve (AURC: mean error rate over every coverage, lower is
better). Signals are compared on the validation split, the floor is chosen
there, and the gate judges it on the test split: the floor is never chosen on
the answers that judge it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

COVERAGES = (0.5, 0.6, 0.8)


def _arrays(conf: Sequence[float | None], correct: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray([-np.inf if x is None else float(x) for x in conf], dtype=float)
    y = np.asarray(correct, dtype=float)
    if len(c) != len(y):
        raise ValueError(f"{len(c)} confidences for {len(y)} answers")
    keep = ~np.isnan(y)
    return c[keep], y[keep]


def ranked(conf: Sequence[float | None], correct: Sequence[float]) -> np.ndarray:
    """Correctness of the answers from the most confident down (ties keep their order)."""
    c, y = _arrays(conf, correct)
    return y[np.argsort(-c, kind="stable")]


def accuracy_at(conf: Sequence[float | None], correct: Sequence[float], coverage: float) -> float | None:
    """Accuracy of the ``coverage`` share of answers the signal is surest of."""
    y = ranked(conf, correct)
    k = int(round(coverage * len(y)))
    return float(y[:k].mean()) if k else None


def aurc(conf: Sequence[float | None], correct: Sequence[float]) -> float | None:
    """Area under the risk-coverage curve: the error rate of the top k answers,
    averaged over k = 1..n."""
    y = ranked(conf, correct)
    if not len(y):
        return None
    risk = np.cumsum(1.0 - y) / np.arange(1, len(y) + 1)
    return float(risk.mean())


def compare(signals: Mapping[str, Sequence[float | None]], correct: Sequence[float],
            coverages: Sequence[float] = COVERAGES) -> dict[str, dict[str, Any]]:
    """Per signal: AURC and accuracy at each coverage."""
    out: dict[str, dict[str, Any]] = {}
    for name, conf in signals.items():
        row: dict[str, Any] = {"aurc": aurc(conf, correct)}
        for cov in coverages:
            row[f"acc@{int(cov * 100)}"] = accuracy_at(conf, correct, cov)
        out[name] = row
    return out


def best_signal(signals: Mapping[str, Sequence[float | None]], correct: Sequence[float],
                default: str = "min_prob") -> str:
    """The signal with the lowest AURC (``default`` on ties or without data)."""
    scores = {k: v["aurc"] for k, v in compare(signals, correct, ()).items() if v["aurc"] is not None}
    if not scores:
        return default
    best = min(scores.values())
    return default if scores.get(default) == best else min(scores, key=lambda k: (scores[k], k))


def floor_for(conf: Sequence[float | None], correct: Sequence[float], target: float) -> float | None:
    """The lowest confidence at which the answers at or above it are still
    right at ``target`` or better, scanning from the surest down and stopping
    where the running accuracy first falls below it (no peeking past a
    failure). None when even the surest answer is wrong."""
    c, y = _arrays(conf, correct)
    order = np.argsort(-c, kind="stable")
    c, y = c[order], y[order]
    floor = None
    right = 0.0
    for k in range(len(y)):
        right += y[k]
        if right / (k + 1) < target:
            break
        # Ties: a floor serves every answer at its confidence, so it may only
        # stop where the next answer is strictly less sure.
        if k + 1 == len(y) or c[k + 1] < c[k]:
            floor = float(c[k])
    return None if floor is None or not np.isfinite(floor) else floor
