"""Metrics as functions of weighted column sums, so a bootstrap resample is
one weighted sum per column (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Message = dict[str, Any]
Components = dict[str, np.ndarray]

OUTPUT_TYPES = ("tool_call", "json", "label", "text")

# --------------------------------------------------------------------------- metrics over sums


@dataclass(frozen=True)
class Metric:
    """A named function of the weighted column sums of a ``Components`` table."""

    name: str
    fn: Callable[[dict[str, np.ndarray]], np.ndarray]
    help: str = ""
    # Primary quality metrics and validity rates are "higher is better"; the
    # report and the gate only use metrics of that kind.
    higher_is_better: bool = True


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def mean_of(col: str, name: str | None = None, help: str = "") -> Metric:
    """Mean of ``col`` over the examples where it is not NaN."""
    return Metric(name or col, lambda s: _div(s[col], s[f"{col}#n"]), help)


def ratio_of(num: str, den: str, name: str, help: str = "") -> Metric:
    return Metric(name, lambda s: _div(s[num], s[den]), help)


def f1_of(tp: str, fp: str, fn: str, name: str, help: str = "") -> Metric:
    return Metric(name, lambda s: _div(2 * s[tp], 2 * s[tp] + s[fp] + s[fn]), help)


def weighted_sums(comps: Components, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Column sums under each row of ``weights`` (shape (B, n)); NaN entries are
    left out and counted in a companion ``name#n`` column."""
    out: dict[str, np.ndarray] = {}
    for name, col in comps.items():
        col = np.asarray(col, dtype=float)
        ok = ~np.isnan(col)
        out[name] = weights @ np.where(ok, col, 0.0)
        out[f"{name}#n"] = weights @ ok.astype(float)
    return out


def compute(
    metrics: Sequence[Metric], comps: Components, weights: np.ndarray | None = None
) -> dict[str, Any]:
    """Metric values: floats for the point estimate (``weights=None``), else an
    array per metric with one value per weight row."""
    n = len(next(iter(comps.values()))) if comps else 0
    point = weights is None
    w = np.ones((1, n)) if point else weights
    sums = weighted_sums(comps, w)
    out: dict[str, Any] = {}
    for m in metrics:
        vals = np.asarray(m.fn(sums), dtype=float)
        out[m.name] = float(vals[0]) if point else vals
    return out


def per_example(metrics: Sequence[Metric], comps: Components) -> dict[str, np.ndarray]:
    """Each metric on each example alone (NaN where it does not apply): the
    column sums of a one-example table are its own values."""
    sums: dict[str, np.ndarray] = {}
    for name, col in comps.items():
        col = np.asarray(col, dtype=float)
        ok = ~np.isnan(col)
        sums[name] = np.where(ok, col, 0.0)
        sums[f"{name}#n"] = ok.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {m.name: np.asarray(m.fn(sums), dtype=float) for m in metrics}


