"""Choose a student for a task: filter the catalog by the constraints and the
task's longest prompt, try each candidate zero-shot and few-shot on a sample of
the validation split, rank by quality then latency, and record the result in
``model_selections`` so that training starts from the winner (docs/models.md,
Selection)."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from protege.ids import new_id
from protege.models.catalog import Catalog, Constraints, ModelSpec, load_catalog
from protege.models.toolcall import content_text as _text

if TYPE_CHECKING:
    from protege.store.db import TraceStore

log = logging.getLogger(__name__)

MODES = ("zero-shot", "few-shot")
# Characters per token assumed before a tokenizer is at hand. BPE vocabularies
# average 3.5-4.5 characters per token on English and JSON; 3 keeps the
# pre-filter conservative (it never rejects a model that would fit).
CHARS_PER_TOKEN = 3.0

Progress = Callable[[str, str, int, int], None]


@dataclass(kw_only=True)
class SelectConfig:
    """How candidates are tried."""

    sample: int = field(default=20, metadata={"help": "Validation rows per candidate and mode"})
    shots: int = field(default=3, metadata={"help": "Examples in the few-shot prompt"})
    modes: tuple[str, ...] = field(default=MODES, metadata={"help": "zero-shot, few-shot or both"})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Generation cap; default 1.5x the longest reference answer + 16"}
    )
    seed: int = field(default=0, metadata={"help": "Seed for the validation sample"})
    include_hub: bool = field(
        default=False, metadata={"help": "Also try models that need a hub download"}
    )
    dtype: str | None = field(default=None, metadata={"help": "Model dtype (default float32 on CPU)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    models: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Only these catalog names (default: every candidate that passes)"}
    )


@dataclass(kw_only=True)
class CandidateResult:
    """One model in one prompting mode."""

    model: str
    hub_id: str
    mode: str
    parameters: int
    licence: str
    n: int = 0
    quality: float = 0.0
    primary_metric: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    tokens_per_s: float = 0.0
    prompt_tokens: float = 0.0
    over_context: int = 0
    param_mb: float = 0.0
    rss_mb: float = 0.0
    load_s: float = 0.0
    rank: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class Selection:
    """Ranked results (iterate it like a list) plus what was left out and why."""

    task_id: str
    dataset_version: str | None
    output_type: str
    constraints: dict[str, Any]
    longest_prompt_tokens: int
    results: list[CandidateResult] = field(default_factory=list)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    id: str = field(default_factory=new_id)

    def __iter__(self) -> Iterator[CandidateResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> CandidateResult:
        return self.results[i]

    @property
    def best(self) -> CandidateResult | None:
        ok = [r for r in self.results if r.error is None]
        return ok[0] if ok else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best"] = self.best.to_dict() if self.best else None
        return d


# -- prompts --------------------------------------------------------------------


def query_text(row: dict[str, Any]) -> str:
    """What distinguishes one call of a task from another: its non-system turns."""
    return "\n".join(_text(m.get("content")) for m in row["messages"] if m.get("role") not in ("system", "developer"))


def _tool_names(tools: Sequence[dict[str, Any]] | None) -> set[str]:
    out = set()
    for t in tools or []:
        fn = t.get("function") or t
        if fn.get("name"):
            out.add(fn["name"])
    return out


def _called(row: dict[str, Any]) -> set[str]:
    calls = (row.get("completion") or {}).get("tool_calls") or []
    return {(c.get("function") or c).get("name") for c in calls} - {None}


def estimate_tokens(row: dict[str, Any]) -> int:
    chars = sum(len(_text(m.get("content"))) for m in row["messages"])
    chars += len(json.dumps(row.get("tools") or [], ensure_ascii=False))
    return int(chars / CHARS_PER_TOKEN) + 8 * len(row["messages"])


class ShotPicker:
    """Few-shot examples by TF-IDF similarity and tool coverage.

    Greedy: each pick maximises similarity to the query, plus a bonus when it
    calls an offered tool no earlier pick has shown, minus a penalty when it
    calls tools the query does not offer (a model copies what it sees).
    """

    def __init__(self, pool: Sequence[dict[str, Any]], *, coverage_bonus: float = 0.5) -> None:
        self.pool = list(pool)
        self.bonus = coverage_bonus
        self._vec = None
        if self.pool:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
            self._matrix = self._vec.fit_transform([query_text(r) for r in self.pool])

    def pick(self, row: dict[str, Any], k: int) -> list[dict[str, Any]]:
        if not self.pool or k <= 0 or self._vec is None:
            return []
        sims = (self._matrix @ self._vec.transform([query_text(row)]).T).toarray().ravel()
        offered = _tool_names(row.get("tools"))
        covered: set[str] = set()
        chosen: list[int] = []
        for _ in range(min(k, len(self.pool))):
            best, best_score = -1, float("-inf")
            for i, ex in enumerate(self.pool):
                if i in chosen or ex.get("id") == row.get("id"):
                    continue
                called = _called(ex)
                score = float(sims[i])
                if called & offered - covered:
                    score += self.bonus
                if called - offered:
                    score -= self.bonus
                if score > best_score:
                    best, best_score = i, score
            if best < 0:
                break
            chosen.append(best)
            covered |= _called(self.pool[best]) & offered
        return [self.pool[i] for i in chosen]


def _example_turns(ex: dict[str, Any]) -> list[dict[str, Any]]:
    """An example as conversation turns: from its last user message on, then its answer."""
    msgs = [m for m in ex["messages"] if m.get("role") not in ("system", "developer")]
    last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=0)
    completion = dict(ex["completion"])
    completion["role"] = "assistant"
    return [*msgs[last_user:], completion]


def shot_messages(row: dict[str, Any], shots: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The row's messages with example exchanges placed after its system prompt."""
    msgs = list(row["messages"])
    head = [m for m in msgs[:1] if m.get("role") in ("system", "developer")]
    body = msgs[len(head) :]
    turns = [t for ex in shots for t in _example_turns(ex)]
    return [*head, *turns, *body]


# -- running --------------------------------------------------------------------


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _score(output_type: str, preds: list[dict[str, Any] | None], rows: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    from protege.evaluate.metrics import PRIMARY_METRIC, components_for, compute

    comps, metrics = components_for(output_type, preds, rows)
    values = compute(metrics, comps)
    return PRIMARY_METRIC[output_type], {k: float(v) for k, v in values.items()}


def run_candidate(
    spec: ModelSpec,
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    output_type: str,
    mode: str,
    picker: ShotPicker | None,
    cfg: SelectConfig,
    progress: Progress | None = None,
) -> CandidateResult:
    """Generate and score one model in one mode on ``rows``."""
    import math

    import torch

    from protege.models.toolcall import build_prompt, parse_completion, render_completion

    res = CandidateResult(
        model=spec.name, hub_id=spec.hub_id, mode=mode, parameters=spec.parameters, licence=spec.licence, n=len(rows)
    )
    cap = cfg.max_new_tokens
    if cap is None:
        longest = max((len(tokenizer(render_completion(r["completion"]))["input_ids"]) for r in rows), default=16)
        cap = int(min(512, max(32, math.ceil(longest * 1.5) + 16)))
    window = spec.context_window
    preds: list[dict[str, Any] | None] = []
    times: list[float] = []
    new_tokens = 0
    prompt_lens: list[int] = []
    gen_s = 0.0
    for i, row in enumerate(rows):
        msgs = row["messages"]
        if mode == "few-shot" and picker is not None:
            msgs = shot_messages(row, picker.pick(row, cfg.shots))
        ids = build_prompt(msgs, row.get("tools"), tokenizer, tokenize=True)
        prompt_lens.append(len(ids))
        if len(ids) + cap > window:
            res.over_context += 1
            preds.append(None)
            continue
        input_ids = torch.tensor([ids], device=model.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=cap,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        dt = time.perf_counter() - t0
        gen = out[0, input_ids.shape[1] :]
        times.append(dt * 1000)
        gen_s += dt
        new_tokens += int(gen.shape[0])
        preds.append(parse_completion(tokenizer.decode(gen, skip_special_tokens=False)))
        if progress:
            progress(spec.name, mode, i + 1, len(rows))
    res.primary_metric, res.metrics = _score(output_type, preds, rows)
    q = res.metrics.get(res.primary_metric, 0.0)
    res.quality = 0.0 if q != q else q  # NaN (metric not applicable) ranks last
    res.latency_ms = statistics.median(times) if times else 0.0
    res.tokens_per_s = new_tokens / gen_s if gen_s else 0.0
    res.prompt_tokens = statistics.mean(prompt_lens) if prompt_lens else 0.0
    return res


def _sample(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    if len(rows) <= n:
        return list(rows)
    return random.Random(seed).sample(rows, n)


def rank(results: list[CandidateResult]) -> list[CandidateResult]:
    """Best quality first; faster first among equals; failures last."""
    ordered = sorted(results, key=lambda r: (r.error is not None, -round(r.quality, 6), r.latency_ms, r.parameters))
    for i, r in enumerate(ordered, 1):
        r.rank = i
    return ordered


def select_models(
    store: TraceStore,
    task_id: str,
    constraints: Constraints | None = None,
    *,
    config: SelectConfig | None = None,
    dataset: Any = None,
    catalog: Catalog | None = None,
    progress: Progress | None = None,
) -> Selection:
    """Try the catalog's candidates on ``task_id`` and rank them (see module doc).

    ``store`` may be None (nothing is recorded); ``dataset`` defaults to the
    task's latest built dataset.
    """
    from protege.models.loader import availability, load_base, parameter_bytes

    cfg = config or SelectConfig()
    for m in cfg.modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}: use {' or '.join(MODES)}")
    if dataset is None:
        from protege.datasets import load_dataset

        dataset = load_dataset(task_id)
    catalog = catalog or load_catalog()
    output_type = dataset.manifest.get("output_type", "tool_call")
    all_rows = [*dataset.train, *dataset.validation, *dataset.test]
    if not all_rows:
        raise ValueError(f"the dataset of task {task_id!r} has no rows")
    longest = max(estimate_tokens(r) for r in all_rows)
    cons = dataclasses.replace(constraints) if constraints else Constraints()
    if cons.min_context is None:
        cons.min_context = longest
    evaluation = list(dataset.validation or dataset.test or dataset.train)
    sample = _sample(evaluation, cfg.sample, cfg.seed)
    sample_ids = {r.get("id") for r in sample}
    pool = [r for r in dataset.train if r.get("id") not in sample_ids]
    picker = ShotPicker(pool) if "few-shot" in cfg.modes and cfg.shots > 0 and pool else None

    sel = Selection(
        task_id=task_id,
        dataset_version=dataset.manifest.get("version"),
        output_type=output_type,
        constraints=asdict(cons),
        longest_prompt_tokens=longest,
    )
    candidates: list[ModelSpec] = []
    for spec in catalog:
        if cfg.models is not None and spec.name not in cfg.models:
            continue
        reasons = cons.reasons(spec)
        if reasons:
            sel.rejected[spec.name] = reasons
        elif not cfg.include_hub and availability(spec) is None:
            sel.unavailable.append(spec.name)
        else:
            candidates.append(spec)
    if cfg.models is not None:
        unknown = set(cfg.models) - set(catalog.names)
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(sorted(unknown))}: see `protege models list`")

    results: list[CandidateResult] = []
    for spec in candidates:
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        try:
            model, tokenizer = load_base(spec.name, dtype=cfg.dtype, device=cfg.device, catalog=catalog)
        except Exception as exc:  # one broken candidate must not end the selection
            log.warning("cannot load %s: %s", spec.name, exc)
            for mode in cfg.modes:
                results.append(
                    CandidateResult(
                        model=spec.name, hub_id=spec.hub_id, mode=mode, parameters=spec.parameters,
                        licence=spec.licence, error=f"load failed: {exc}",
                    )
                )
            continue
        load_s = time.perf_counter() - t0
        for mode in cfg.modes:
            if mode == "few-shot" and picker is None:
                continue
            res = run_candidate(
                spec, model, tokenizer, sample, output_type=output_type, mode=mode, picker=picker, cfg=cfg,
                progress=progress,
            )
            res.load_s = round(load_s, 2)
            res.param_mb = parameter_bytes(model) / 1e6
            res.rss_mb = max(0.0, _rss_mb() - rss0)
            results.append(res)
        del model, tokenizer
    sel.results = rank(results)
    if store is not None:
        record_selection(store, sel)
    return sel


# -- persistence ----------------------------------------------------------------


def record_selection(store: TraceStore, sel: Selection) -> None:
    from protege.registry.migrations import model_selections

    best = sel.best
    with store.write() as conn:
        conn.execute(
            model_selections.insert().values(
                id=sel.id, task_id=sel.task_id, dataset_version=sel.dataset_version, created_at=time.time(),
                best_model=best.model if best else None, best_mode=best.mode if best else None,
                constraints=json.dumps(sel.constraints), results=json.dumps(sel.to_dict(), default=str),
            )
        )


def latest_selection(store: TraceStore, task_id: str) -> dict[str, Any] | None:
    """The last recorded selection for a task (``Selection.to_dict()`` form)."""
    import sqlalchemy as sa

    from protege.registry.migrations import model_selections as t

    with store.read() as conn:
        row = conn.execute(
            sa.select(t.c.results).where(t.c.task_id == task_id).order_by(t.c.created_at.desc()).limit(1)
        ).first()
    return json.loads(row[0]) if row else None
