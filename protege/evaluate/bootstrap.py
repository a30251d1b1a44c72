"""Paired bootstrap confidence intervals, vectorised with numpy.

A resample is a row of weights: how many times each test example was drawn
(multinomial, n draws over n examples). Every system is scored on the *same*
resamples, so intervals of differences and ratios between systems account for
the examples they share (a paired bootstrap). Intervals are percentile
intervals; the resamples are regenerated from the seed for each use, so the
result does not depend on the order systems are scored in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from protege.evaluate.metrics import Components, Metric, compute


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_dict(self) -> dict[str, float]:
        return {
            k: (None if v is None or np.isnan(v) else round(float(v), 6)) for k, v in asdict(self).items()
        }


@dataclass(frozen=True)
class Resampler:
    """The same bootstrap resamples, on demand, in memory-bounded chunks."""

    n: int
    n_resamples: int = 1000
    seed: int = 0
    # Rows of weights generated at once: n * chunk floats live in memory.
    chunk: int = 250

    def chunks(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        if self.n == 0:
            return
        p = np.full(self.n, 1.0 / self.n)
        left = self.n_resamples
        while left > 0:
            size = min(self.chunk, left)
            left -= size
            yield rng.multinomial(self.n, p, size=size).astype(float)

    def weights(self) -> np.ndarray:
        parts = list(self.chunks())
        return np.concatenate(parts) if parts else np.zeros((0, self.n))


def _interval(value: float, samples: np.ndarray, alpha: float) -> Interval:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0 or np.isnan(value):
        return Interval(value, float("nan"), float("nan"))
    low, high = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(float(value), float(low), float(high))


def resampled(metrics: Sequence[Metric], comps: Components, resampler: Resampler) -> dict[str, np.ndarray]:
    """Every metric on every resample: name -> array of n_resamples values."""
    out: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics}
    for w in resampler.chunks():
        vals = compute(metrics, comps, w)
        for name, v in vals.items():
            out[name].append(v)
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}


def bootstrap(
    metrics: Sequence[Metric], comps: Components, resampler: Resampler, *, alpha: float = 0.05
) -> tuple[dict[str, Interval], dict[str, np.ndarray]]:
    """(point estimate with its (1 - alpha) interval per metric, the resampled
    values) for one system."""
    point = compute(metrics, comps)
    samples = resampled(metrics, comps, resampler)
    return {name: _interval(point[name], samples[name], alpha) for name in point}, samples


def ratio_interval(
    num_point: float,
    den_point: float,
    num_samples: np.ndarray,
    den_samples: np.ndarray,
    *,
    alpha: float = 0.05,
) -> Interval:
    """Interval of num / den where both were measured on the same resamples: the
    ratio is taken per resample, so the two systems' shared examples cancel."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den_samples > 0, num_samples / np.where(den_samples > 0, den_samples, 1), np.nan)
    value = num_point / den_point if den_point and not np.isnan(den_point) else float("nan")
    return _interval(value, ratio, alpha)


def difference_interval(
    a_point: float, b_point: float, a_samples: np.ndarray, b_samples: np.ndarray, *, alpha: float = 0.05
) -> Interval:
    """Interval of a - b on paired resamples."""
    return _interval(a_point - b_point, a_samples - b_samples, alpha)


def mean_interval(
    values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> Interval:
    """Bootstrap interval of a plain mean (convenience for one column)."""
    from protege.evaluate.metrics import mean_of

    comps = {"x": np.asarray(values, dtype=float)}
    res, _ = bootstrap([mean_of("x")], comps, Resampler(len(values), n_resamples, seed), alpha=alpha)
    return res["x"]
