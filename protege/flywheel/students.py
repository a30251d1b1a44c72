"""The flywheel's training steps: the base model of a task's student, its
training, and the recipe search that trains several and keeps the best on the
validation split (every trial recorded in the registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protege.flywheel.config import FlywheelConfig

if TYPE_CHECKING:
    from protege.store.db import TraceStore


def select_base(store: TraceStore, cfg: FlywheelConfig, task_id: str, ds_info: dict[str, Any]) -> dict[str, Any]:
    """The base model of the task's student: ``cfg.base``, or with 'auto' the
    best of `protege select`'s ranking on the task's dataset."""
    if cfg.base != "auto":
        return {"base": cfg.base, "how": "configured"}
    from protege.datasets import load_dataset
    from protege.models.select import record_selection, select_models

    sel = select_models(store, task_id, dataset=load_dataset(task_id, ds_info["version"]))
    record_selection(store, sel)
    best = sel.best()
    if best is None:
        raise RuntimeError(f"no base model could run task {task_id}")
    return {"base": best.model, "how": "select", "quality": best.quality, "latency_ms": best.latency_ms}


def train_student(store: TraceStore, cfg: FlywheelConfig, task_id: str, ds_info: dict[str, Any],
           train_fn: Callable[..., Any] | None, progress: bool, base: str) -> dict[str, Any]:
    import copy

    from protege.datasets import load_dataset

    tcfg = copy.deepcopy(cfg.train)
    tcfg.base = base
    tcfg.seed = cfg.seed
    ds = load_dataset(task_id, ds_info["version"])
    if train_fn is None:
        from protege.train import train_adapter

        train_fn = train_adapter
    res = train_fn(task_id, config=tcfg, dataset=ds, store=store, progress=progress)
    rec = res.record
    if rec is None:
        raise RuntimeError(f"the adapter of {task_id} was not registered")
    m = res.metrics
    return {"adapter_id": rec.id, "adapter": rec.ref, "path": str(res.adapter_dir),
            "steps": m.get("steps"), "train_time_s": m.get("train_time_s"), "best_val_loss": m.get("best_val_loss"),
            "train_examples": m.get("train_examples")}


def validation_score(store: TraceStore, task_id: str, adapter_id: str, ds_info: dict[str, Any],
                      predictors: dict[str, Any] | None) -> float | None:
    """The adapter's primary score against the teacher on the validation split."""
    from protege.evaluate import metrics as M
    from protege.evaluate.runner import TaskData, _each, load_task_data

    data: TaskData = load_task_data(task_id, ds_info["version"])
    rows = list(data.validation)
    if not rows:
        return None
    if predictors and "student" in predictors:
        student = predictors["student"]
    else:
        from pathlib import Path

        from protege.evaluate.predictors import load_student
        from protege.registry import Registry

        rec = Registry(store).get(adapter_id)
        student = load_student(Path(rec.path), prefix=data.manifest.get("prefix"))
    output_type = data.manifest.get("output_type") or "text"
    comps, defs = M.components_for(output_type, student.predict(rows), rows, [r["completion"] for r in rows])
    return float(_each(defs, comps, M.PRIMARY_METRIC[output_type]).mean())


def recipe_search(store: TraceStore, cfg: FlywheelConfig, task_id: str, ds_info: dict[str, Any],
                   train_fn: Callable[..., Any] | None, progress: bool, base: str,
                   predictors: dict[str, Any] | None) -> dict[str, Any]:
    """Train one adapter per recipe, keep the one with the best validation
    score (ties: the earlier recipe), retire the rest; every trial is written
    to its adapter's registry metrics (``recipe_trial``)."""
    import copy
    import dataclasses

    from protege.registry import Registry

    names = {f.name for f in dataclasses.fields(cfg.train)}
    trials: list[dict[str, Any]] = []
    for i, recipe in enumerate(cfg.recipes):
        unknown = set(recipe) - names - {"base"}
        if unknown:
            raise ValueError(f"recipe {i}: unknown training settings {sorted(unknown)}")
        trial_cfg = copy.deepcopy(cfg)
        for key, value in recipe.items():
            if key != "base":
                setattr(trial_cfg.train, key, value)
        tr = train_student(store, trial_cfg, task_id, ds_info, train_fn, progress, str(recipe.get("base") or base))
        score = validation_score(store, task_id, tr["adapter_id"], ds_info, predictors)
        trials.append({"recipe": dict(recipe), "adapter_id": tr["adapter_id"], "adapter": tr["adapter"],
                       "validation_score": score, "train_time_s": tr.get("train_time_s"),
                       "best_val_loss": tr.get("best_val_loss"), "result": tr})
    best = max(range(len(trials)), key=lambda k: (trials[k]["validation_score"] or -1.0, -k))
    reg = Registry(store)
    for k, trial in enumerate(trials):
        trial["chosen"] = k == best
        info = {key: v for key, v in trial.items() if key != "result"}
        reg.update_metrics(trial["adapter_id"], {"recipe_trial": info})
        if k != best:
            reg.retire(trial["adapter_id"], f"recipe search: validation {trial['validation_score']} "
                                            f"< {trials[best]['validation_score']} of {trials[best]['adapter']}")
    out = dict(trials[best]["result"])
    out["trials"] = [{key: v for key, v in trial.items() if key != "result"} for trial in trials]
    return out


def recipe_trials(store: TraceStore, task_id: str | None = None) -> list[dict[str, Any]]:
    """Every recorded recipe trial (newest adapters first)."""
    from protege.registry import Registry

    out = []
    for rec in Registry(store).list(task_id):
        trial = (rec.metrics or {}).get("recipe_trial") if isinstance(rec.metrics, dict) else None
        if trial:
            out.append({"task_id": rec.task_id, "status": rec.status, **trial})
    return out
