"""``evaluate_task``: the student against the base model and the teacher on a
task's held-out test split, with paired bootstrap intervals, share of teacher
quality, speed and cost; the result is stored in ``evaluations``.

References are the teacher's answers (the dataset's ``completion``). Where a
trace carries ground truth (BFCL traces: ``meta["bfcl"]["ground_truth"]``)
every system, the teacher included, is also scored against it, and the share
of teacher quality is taken on that column: the teacher scores a trivial 1.0
against its own answers, so the ground truth is the fairer yardstick when
there is one.

One module from the split to the stored report: every system is predicted
and scored in one pass, so that each interval is paired on the same examples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protege.evaluate import metrics as M
from protege.evaluate.bootstrap import Resampler, bootstrap, ratio_interval
from protege.evaluate.cost import CostConfig, device_rate, saving, student_cost_per_1k, teacher_cost_per_1k
from protege.evaluate.predictors import Predictor, TeacherPredictor
from protege.evaluate.records import EvalReport, SystemResult, save_report

if TYPE_CHECKING:
    from protege.store.db import TraceStore

log = logging.getLogger(__name__)

SYSTEMS = ("student", "base_zero_shot", "base_few_shot", "teacher")


@dataclass(kw_only=True)
class EvalConfig:
    n_resamples: int = field(
        default=1000, metadata={"help": "bootstrap resamples for the confidence intervals"}
    )
    alpha: float = field(
        default=0.05, metadata={"help": "1 - confidence level of the intervals (0.05: 95 %)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and of --sample"})
    sample: int | None = field(default=None, metadata={"help": "evaluate on this many test examples only"})
    few_shot: int = field(
        default=3, metadata={"help": "solved train examples shown to the few-shot baseline"}
    )
    batch_size: int = field(default=8, metadata={"help": "generation batch size"})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "longest generated answer (default: the adapter's, else 256)"}
    )
    embeddings: bool = field(
        default=True, metadata={"help": "MiniLM embedding similarity for free-text tasks"}
    )
    judge: bool = field(
        default=False, metadata={"help": "LLM judge run by the teacher for free-text tasks"}
    )
    judge_model: str = field(default="gpt-4o-mini", metadata={"help": "model the judge runs on"})
    base: str | None = field(
        default=None,
        metadata={
            "help": "base model for the baselines when there is no student (catalog name, hub id, dir)"
        },
    )
    checker: str | None = field(default=None, metadata={"help": "'bfcl': also score with BFCL's AST checker"})
    dataset_version: str | None = field(default=None, metadata={"help": "dataset version (default: latest)"})
    latency_samples: int = field(
        default=5, metadata={"help": "test examples answered one at a time to measure the student's latency"}
    )
    store_result: bool = field(
        default=True, metadata={"help": "store the evaluation in the evaluations table"}
    )
    validation: bool = field(
        default=True,
        metadata={"help": "also answer the validation split with the student: the gate chooses its "
                  "confidence signal and floor there and judges them on the test split"},
    )
    cost: CostConfig = field(default_factory=CostConfig, metadata={"help": "student hardware price"})


@dataclass
class TaskData:
    manifest: dict[str, Any]
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    path: Path | None = None
    validation: list[dict[str, Any]] = field(default_factory=list)


def _rows(split: Any) -> list[dict[str, Any]]:
    if split is None:
        return []
    if isinstance(split, list):
        return split
    if hasattr(split, "to_list"):
        return list(split.to_list())
    return list(split)


def load_task_data(task_id: str, version: str | None = None) -> TaskData:
    """The task's dataset (``protege.datasets.load_dataset``) as the runner uses it."""
    from protege.datasets import load_dataset

    ds = load_dataset(task_id, version)
    return TaskData(dict(ds.manifest), _rows(ds.train), _rows(ds.test), Path(ds.path),
                    _rows(getattr(ds, "validation", None)))


@dataclass
class AdapterRef:
    id: str
    path: Path | None
    base: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def resolve_adapter(store: TraceStore, task_id: str, adapter: str | None) -> AdapterRef | None:
    """An adapter by registry id, version ("v2", "2", "task:v2") or directory
    path; ``None``: the task's newest registered adapter, if any."""
    if adapter and Path(adapter).is_dir():
        return AdapterRef(Path(adapter).name, Path(adapter))
    from protege.registry import Registry

    reg = Registry(store)
    rec = None
    if adapter is None:
        rec = reg.get(task_id)
    else:
        v = adapter[1:] if adapter[:1] in ("v", "V") else adapter
        if v.isdigit():
            rec = reg.get(task_id, int(v))
        if rec is None:
            rec = reg.get(adapter)
            if rec is not None and rec.task_id != task_id:
                raise ValueError(f"adapter {adapter!r} belongs to task {rec.task_id!r}, not {task_id!r}")
    if rec is None:
        if adapter is None:
            return None
        raise ValueError(f"no adapter {adapter!r} for task {task_id!r} (see `protege adapters list`)")
    path = Path(rec.path) if rec.path else None
    return AdapterRef(rec.id, path, rec.base_model, dict(rec.config or {}))


# --------------------------------------------------------------------------- the run


def _ground_truth(rows: Sequence[dict[str, Any]]) -> tuple[list[Any], list[dict[str, str] | None]]:
    from protege.evaluate.bfcl_check import call_ground_truth, name_map_for

    gts, maps = [], []
    for r in rows:
        gt = call_ground_truth(r)
        gts.append(gt)
        maps.append(name_map_for(r) if gt is not None else None)
    return gts, maps


def _timed_predict(
    p: Predictor, rows: Sequence[dict[str, Any]]
) -> tuple[list[M.Message], float, dict[str, float]]:
    t0 = time.perf_counter()
    preds = p.predict(rows)
    wall = time.perf_counter() - t0
    if len(preds) != len(rows):
        raise RuntimeError(f"{p.name}: {len(preds)} predictions for {len(rows)} examples")
    return preds, wall, dict(getattr(p, "stats", {}) or {})


def evaluate_task(
    store: TraceStore,
    task_id: str,
    *,
    adapter: str | None = None,
    baselines: bool = True,
    config: EvalConfig | None = None,
    predictors: dict[str, Predictor] | None = None,
    data: TaskData | None = None,
    judge: Any = None,
    progress: Callable[[str], None] | None = None,
    advance: Callable[[str, int, int], None] | None = None,
) -> EvalReport:
    """Evaluate the student (base + ``adapter``) and, with ``baselines``, the base
    model zero-shot and few-shot on the task's test split; the teacher is always
    scored. ``predictors`` replaces any of the systems (tests, custom engines).
    ``progress(message)`` hears of each step, ``advance(system, done, total)``
    of each generated batch (for a progress bar)."""
    config = config or EvalConfig()
    say = progress or (lambda msg: log.info(msg))
    data = data or load_task_data(task_id, config.dataset_version)
    manifest = data.manifest
    output_type = manifest.get("output_type") or "text"
    if output_type not in M.OUTPUT_TYPES:
        raise ValueError(f"dataset of {task_id!r} has unknown output_type {output_type!r}")
    rows = list(data.test)
    if config.sample and config.sample < len(rows):
        pick = np.sort(np.random.default_rng(config.seed).choice(len(rows), config.sample, replace=False))
        rows = [rows[i] for i in pick]
    if not rows:
        raise ValueError(f"the test split of {task_id!r} is empty")

    systems = _systems(store, task_id, adapter, baselines, config, data, dict(predictors or {}), say)
    adapter_id = systems.pop("_adapter_id", None)  # type: ignore[arg-type]
    device = systems.pop("_device", "cpu")  # type: ignore[arg-type]

    refs = [r["completion"] for r in rows]
    gts, name_maps = _ground_truth(rows) if output_type == "tool_call" else ([None] * len(rows), [])
    has_gt = any(g is not None for g in gts)
    resampler = Resampler(len(rows), config.n_resamples, config.seed)
    primary = M.PRIMARY_METRIC[output_type]
    validity = M.VALIDITY_METRIC[output_type]

    judge_obj = judge
    if output_type == "text" and config.judge and judge_obj is None:
        from protege.evaluate.judge import Judge, JudgeConfig
        from protege.teacher import HttpTeacher

        judge_obj = Judge(HttpTeacher.from_env(), JudgeConfig(model=config.judge_model))
    if output_type == "text" and judge_obj is not None:
        primary = "judge_score"

    results: dict[str, SystemResult] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    gt_samples: dict[str, dict[str, np.ndarray]] = {}
    all_preds: dict[str, list[M.Message]] = {}
    per_example: dict[str, dict[str, np.ndarray]] = {}  # system -> primary / gt / validity per example
    student_conf: list[float | None] | None = None
    student_signals: dict[str, list[float | None]] | None = None
    for name, predictor in systems.items():
        say(f"predicting: {name} ({len(rows)} examples)")
        if advance is not None and hasattr(predictor, "progress"):
            predictor.progress = lambda k, name=name: advance(name, k, len(rows))
        try:
            preds, wall, stats = _timed_predict(predictor, rows)
        except Exception as exc:  # one failing baseline must not sink the whole evaluation
            if name == "student":
                raise
            log.exception("%s failed", name)
            results[name] = SystemResult(name, {}, error=f"{type(exc).__name__}: {exc}")
            continue
        all_preds[name] = preds
        extra: dict[str, Any] = {}
        if output_type == "text":
            texts = [(p or {}).get("content") or "" for p in preds]
            if config.embeddings:
                try:
                    extra["similarities"] = M.embedding_similarities(
                        texts, [r.get("content") or "" for r in refs]
                    )
                except Exception as exc:  # MiniLM not installed: the other text metrics still stand
                    log.warning("embedding similarity skipped: %s", exc)
            if judge_obj is not None:
                if name == "teacher":
                    extra["judge_scores"] = [0.5] * len(rows)  # against itself: a tie by symmetry
                else:
                    from protege.evaluate.judge import request_text

                    extra["judge_scores"] = judge_obj.scores(
                        [request_text(r.get("messages") or []) for r in rows],
                        texts,
                        [r.get("content") or "" for r in refs],
                    )
        comps, defs = M.components_for(output_type, preds, rows, refs, **extra)
        intervals, samples[name] = bootstrap(defs, comps, resampler, alpha=config.alpha)
        res = SystemResult(name, intervals)
        per_example[name] = {
            "reference": _each(defs, comps, primary),
            "valid": _each(defs, comps, validity),
        }
        if has_gt:
            gcomps = M.ground_truth_components(preds, gts, [r.get("tools") for r in rows], name_maps)
            gt_iv, gt_samples[name] = bootstrap(M.GROUND_TRUTH_METRICS, gcomps, resampler, alpha=config.alpha)
            res.vs_ground_truth = gt_iv
            per_example[name]["ground_truth"] = np.asarray(gcomps["gt_exact"], dtype=float)
        if name == "student":
            c = list(getattr(predictor, "confidences", None) or [])
            student_conf = c if len(c) == len(rows) and any(x is not None for x in c) else None
            student_signals = _signal_lists(predictor, len(rows))
        if name != "teacher":
            # Throughput and cost from generated answers only: answers confirmed
            # against the teacher's draft cost evaluation less than serving them would.
            generated = stats.get("calls")
            seconds = stats.get("seconds") or (None if generated == 0 else wall)
            calls = generated or len(rows)
            res.seconds_per_call = seconds / calls if seconds and calls else None
            tokens = stats.get("generated_tokens")
            res.tokens_per_s = tokens / seconds if tokens and seconds else None
            if name == "student":
                res.latency_ms = _latency_ms(predictor, rows, config.latency_samples)
                if res.seconds_per_call is None and res.latency_ms is not None:
                    res.seconds_per_call = res.latency_ms / 1000.0  # every draft confirmed: unbatched time
            # Baselines run on the student's hardware: the same price per second.
            res.cost_per_1k = student_cost_per_1k(res.seconds_per_call, device, config.cost)
        results[name] = res

    report = EvalReport(
        task_id=task_id,
        adapter_id=adapter_id,
        dataset_version=str(manifest.get("version")) if manifest.get("version") is not None else None,
        dataset_hash=manifest.get("hash"),
        output_type=output_type,
        primary_metric=primary,
        validity_metric=validity,
        n_examples=len(rows),
        systems=results,
        config=_config_dict(config),
    )
    _share(report, samples, gt_samples, has_gt, primary, config.alpha)
    if student_conf is not None and "student" in per_example and "teacher" in per_example:
        basis = report.share_basis or "reference"
        report.selective = {
            "basis": basis,
            "confidence": student_conf,
            "student": per_example["student"][basis].tolist(),
            "teacher": per_example["teacher"][basis].tolist(),
            "valid": per_example["student"]["valid"].tolist(),
        }
        if student_signals:
            report.selective["signals"] = student_signals
        val_rows = list(data.validation or [])
        if config.validation and val_rows and "student" in systems:
            say(f"predicting: student on the validation split ({len(val_rows)} examples)")
            if advance is not None and hasattr(systems["student"], "progress"):
                systems["student"].progress = lambda k: advance("student, validation", k, len(val_rows))
            report.selective["validation"] = _validation_selective(
                systems["student"], systems["teacher"], val_rows, output_type, basis
            )
    _costs(report, store, rows, device, config)
    if config.checker == "bfcl" and "student" in all_preds:
        from protege.evaluate.bfcl_check import cross_check

        report.bfcl = cross_check(rows, all_preds["student"])
    elif config.checker not in (None, "bfcl"):
        raise ValueError(f"unknown checker {config.checker!r} (only 'bfcl')")
    if config.store_result:
        from protege.evaluate.answers import build_answers, write_answers
        from protege.ids import new_id

        report.id = report.id or new_id()
        answers = build_answers(rows, all_preds, per_example, report.share_basis or "reference",
                                student_signals)
        report.answers_path = str(write_answers(task_id, report.id, answers))
        save_report(store, report)
    return report


def _signal_lists(predictor: Any, n: int) -> dict[str, list[float | None]] | None:
    sigs = list(getattr(predictor, "signals", None) or [])
    if len(sigs) != n or not any(sigs):
        return None
    names = sorted({k for d in sigs if d for k in d})
    return {k: [None if d is None else d.get(k) for d in sigs] for k in names}


def _validation_selective(student: Any, teacher: Any, rows: list[dict[str, Any]], output_type: str,
                          basis: str) -> dict[str, Any]:
    """Per validation answer: the student's signals and its score and the
    teacher's on the share's basis, for the gate to choose a floor on."""
    refs = [r["completion"] for r in rows]
    out: dict[str, Any] = {"n": len(rows)}
    for name, predictor in (("student", student), ("teacher", teacher)):
        preds = predictor.predict(rows)
        if name == "student":
            out["signals"] = _signal_lists(predictor, len(rows)) or {}
            out["confidence"] = list(getattr(predictor, "confidences", None) or [])
        comps, defs = M.components_for(output_type, preds, rows, refs)
        primary = M.PRIMARY_METRIC[output_type]
        if basis == "ground_truth" and output_type == "tool_call":
            gts, name_maps = _ground_truth(rows)
            if any(g is not None for g in gts):
                g = M.ground_truth_components(preds, gts, [r.get("tools") for r in rows], name_maps)
                out[name] = np.asarray(g["gt_exact"], dtype=float).tolist()
                continue
        out[name] = _each(defs, comps, primary).tolist()
    return out


def _each(defs: Sequence[M.Metric], comps: M.Components, metric: str) -> np.ndarray:
    """``metric`` of each example on its own (NaN where it does not apply)."""
    m = [d for d in defs if d.name == metric]
    n = len(next(iter(comps.values()))) if comps else 0
    if not m or n == 0:
        return np.full(n, np.nan)
    return M.per_example(m, comps)[metric]


def _latency_ms(predictor: Any, rows: Sequence[dict[str, Any]], k: int) -> float | None:
    """Median wall time of single-example predictions (no batching to hide behind)."""
    if k <= 0 or not rows:
        return None
    times = []
    # Generated, as served: not confirmed against the teacher's answer.
    verify = getattr(predictor, "verify", None)
    if verify:
        predictor.verify = False
    try:
        for row in rows[:k]:
            t0 = time.perf_counter()
            predictor.predict([row])
            times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        if verify:
            predictor.verify = verify
    return float(np.median(times))


def _config_dict(config: EvalConfig) -> dict[str, Any]:
    return asdict(config)


def _systems(
    store: TraceStore,
    task_id: str,
    adapter: str | None,
    baselines: bool,
    config: EvalConfig,
    data: TaskData,
    given: dict[str, Predictor],
    say: Callable[[str], None],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    prefix = data.manifest.get("prefix")
    ref = None
    if "student" in given:
        out["student"] = given["student"]
        out["_adapter_id"] = adapter
    else:
        ref = resolve_adapter(store, task_id, adapter)
        if ref is not None:
            from protege.evaluate.predictors import adapter_settings, load_student

            say(f"loading student {ref.id}")
            if ref.path is None or not ref.path.exists():
                raise FileNotFoundError(f"adapter {ref.id}: files not found at {ref.path}")
            settings = adapter_settings(ref.path)
            drop = ref.config.get("drop_prefix")
            out["student"] = load_student(
                ref.path,
                base=ref.base,
                drop_prefix=settings.get("drop_prefix", False) if drop is None else bool(drop),
                prefix=settings.get("prefix") or prefix,
                batch_size=config.batch_size,
                max_new_tokens=config.max_new_tokens or settings.get("max_new_tokens") or 256,
            )
            out["_adapter_id"] = ref.id
    if baselines:
        need = [k for k in ("base_zero_shot", "base_few_shot") if k not in given]
        student = out.get("student")
        if need and student is not None and hasattr(student, "model"):
            _base_baselines(
                out,
                need,
                _AdapterOff(student.model),
                student.tokenizer,
                data,
                config,
                getattr(student, "max_new_tokens", None),
            )
        elif need and config.base:
            from protege.evaluate.predictors import load_base_model

            say(f"loading base model {config.base}")
            model, tokenizer = load_base_model(config.base)
            _base_baselines(out, need, model, tokenizer, data, config, None)
        elif need and student is None:
            say(f"no adapter registered for {task_id!r} and no base model given: scoring the teacher only")
        for k in ("base_zero_shot", "base_few_shot"):
            if k in given:
                out[k] = given[k]
    out["teacher"] = given.get("teacher") or TeacherPredictor()
    student = out.get("student")
    out["_device"] = getattr(student, "device", "cpu") if student is not None else "cpu"
    return out


def _base_baselines(
    out: dict[str, Any],
    need: list[str],
    model: Any,
    tokenizer: Any,
    data: TaskData,
    config: EvalConfig,
    max_new_tokens: int | None,
) -> None:
    """The base model zero-shot and with solved train examples in the prompt,
    both with the task's full prompt (a base model needs the static prefix)."""
    from protege.evaluate.predictors import TransformersPredictor

    common: dict[str, Any] = dict(
        prefix=data.manifest.get("prefix"),
        drop_prefix=False,
        batch_size=config.batch_size,
        max_new_tokens=max_new_tokens or config.max_new_tokens or 256,
    )
    if "base_zero_shot" in need:
        out["base_zero_shot"] = TransformersPredictor("base_zero_shot", model, tokenizer, **common)
    if "base_few_shot" in need and data.train and config.few_shot > 0:
        rng = np.random.default_rng(config.seed)
        idx = rng.choice(len(data.train), min(config.few_shot, len(data.train)), replace=False)
        shots = [data.train[i] for i in sorted(idx)]
        out["base_few_shot"] = TransformersPredictor("base_few_shot", model, tokenizer, shots=shots, **common)


class _AdapterOff:
    """A PEFT model seen with its adapter disabled: the baselines share the
    student's weights instead of loading the base model a second time."""

    def __init__(self, peft_model: Any) -> None:
        self._m = peft_model

    def parameters(self) -> Any:
        return self._m.parameters()

    def eval(self) -> Any:
        return self._m.eval()

    def _run(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        ctx = getattr(self._m, "disable_adapter", None)
        if ctx is None:
            return fn(**kwargs)
        with ctx():
            return fn(**kwargs)

    def generate(self, **kwargs: Any) -> Any:
        return self._run(self._m.generate, **kwargs)

    def __call__(self, **kwargs: Any) -> Any:
        return self._run(self._m, **kwargs)


def _share(
    report: EvalReport,
    samples: dict[str, dict[str, np.ndarray]],
    gt_samples: dict[str, dict[str, np.ndarray]],
    has_gt: bool,
    primary: str,
    alpha: float,
) -> None:
    st, te = report.systems.get("student"), report.systems.get("teacher")
    if not st or not te or not st.metrics or not te.metrics:
        return
    if (
        has_gt
        and "student" in gt_samples
        and "teacher" in gt_samples
        and report.primary_metric == "exact_call_match"
    ):
        report.share_basis = "ground_truth"
        sp, tp = st.vs_ground_truth[primary].value, te.vs_ground_truth[primary].value  # type: ignore[index]
        report.share_of_teacher = ratio_interval(
            sp, tp, gt_samples["student"][primary], gt_samples["teacher"][primary], alpha=alpha
        )
    else:
        report.share_basis = "reference"
        report.share_of_teacher = ratio_interval(
            st.metrics[primary].value,
            te.metrics[primary].value,
            samples["student"][primary],
            samples["teacher"][primary],
            alpha=alpha,
        )


def _costs(
    report: EvalReport, store: TraceStore, rows: Sequence[dict[str, Any]], device: str, config: EvalConfig
) -> None:
    ids = [r.get("id") for r in rows if r.get("id")]
    traces: list[Any] = []
    if ids:
        try:
            traces = list(store.iter_traces(ids=ids))
        except Exception as exc:  # no such traces here (a dataset copied from elsewhere)
            log.warning("teacher cost unknown: %s", exc)
    teacher, source = teacher_cost_per_1k(traces)
    st = report.systems.get("student")
    student = st.cost_per_1k if st else None
    report.cost = {
        "teacher_per_1k": teacher,
        "teacher_source": source,
        "student_per_1k": student,
        "student_device": device,
        "student_usd_per_hour": device_rate(device, config.cost),
        "saving": saving(student, teacher),
    }
    if te := report.systems.get("teacher"):
        te.cost_per_1k = teacher
        lat = [t.latency_ms for t in traces if getattr(t, "latency_ms", None) is not None]
        te.seconds_per_call = float(np.median(lat)) / 1000.0 if lat else None
        te.latency_ms = float(np.median(lat)) if lat else None


# --------------------------------------------------------------------------- storage
