"""The flywheel: curate -> tasks -> pick -> dataset -> train -> evaluate ->
gate -> shadow -> promote or retire, again and again as traffic comes in.

Every step is a row in ``flywheel_steps`` with its outcome, so a run that
crashed resumes where it stopped: finished steps are not redone, their stored
outcomes drive the rest. Between runs, ``flywheel_tasks`` remembers what each
task's student was trained on; a task is retrained only when enough new data
arrived or its traffic drifted (``protege.flywheel.drift``). The order of the
steps and the task state they share are kept in this one module; a run's
record is ``steps.py``, the training steps ``students.py``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from protege.flywheel.config import FlywheelConfig
from protege.flywheel.migrations import runs_table, steps_table, tasks_state_table
from protege.flywheel.steps import FlywheelReport, Progress, Run, StepFailed, dumps, end_run, start_run
from protege.flywheel.students import recipe_search, select_base, train_student

if TYPE_CHECKING:
    from protege.store.db import TraceStore

log = logging.getLogger("protege.flywheel")

FALLBACK_PREFIX = "fp-"  # task ids made from a call-site fingerprint when no discovery ran


def fingerprint_task_id(request: dict[str, Any]) -> str:
    """The task id the flywheel gives a call site when the tasks stage did not."""
    from protege.tasks.fingerprint import fingerprint

    return FALLBACK_PREFIX + fingerprint(request)[3:15]


# -- task state ---------------------------------------------------------------------------


def task_states(store: TraceStore) -> dict[str, dict[str, Any]]:
    with store.read() as conn:
        return {r.task_id: dict(r._mapping) for r in conn.execute(sa.select(tasks_state_table))}


def _save_state(store: TraceStore, task_id: str, **values: Any) -> None:
    values["updated_at"] = time.time()
    with store.write() as conn:
        n = conn.execute(
            tasks_state_table.update().where(tasks_state_table.c.task_id == task_id).values(**values)
        ).rowcount
        if not n:
            row = {"task_id": task_id, "adapter_id": None, "dataset_hash": None, "trained_on": 0,
                   "trained_until": 0.0, "fingerprints": None, "centroid": None, "state": "new", "reason": None}
            row.update(values)
            conn.execute(tasks_state_table.insert().values(**row))


# -- the steps ------------------------------------------------------------------------------


def _curate(store: TraceStore, cfg: FlywheelConfig) -> dict[str, Any]:
    from protege.curate import CurateConfig, curate

    rep = curate(store, CurateConfig(ner=cfg.curate_ner))
    return {"seen": rep.seen, "kept": rep.kept, "dropped": rep.dropped, "seconds": round(rep.elapsed_s, 2)}


def _discover(store: TraceStore, cfg: FlywheelConfig) -> dict[str, Any] | None:
    """Tasks from the tasks stage when it is installed: new calls are assigned
    to the known tasks (fast); discovery (re-clustering) runs when there are no
    tasks yet or when enough calls come from call sites no task covers
    (new fingerprints)."""
    from protege.tasks import DiscoverConfig, TaskIndex, discover_tasks
    from protege.tasks.fingerprint import fingerprint
    from protege.tasks.index import assign_unassigned

    index = TaskIndex.load(store)
    out: dict[str, Any] = {"how": "discovery"}
    if len(index):
        out["assign"] = assign_unassigned(store, index=index)
        new_fps: Counter[str] = Counter()
        for t in _unassigned(store):
            fp = fingerprint(t.request)
            if fp not in index.by_fp:
                new_fps[fp] += 1
        recurring = {fp: n for fp, n in new_fps.items() if n >= 2}
        if sum(recurring.values()) < cfg.rediscover_min_calls:
            return out
        out["reason"] = (f"{sum(recurring.values())} calls from {len(recurring)} new call sites: "
                         "tasks rediscovered")
    dcfg = DiscoverConfig(min_task_size=max(3, cfg.min_task_size))
    if cfg.embed_model:
        from protege.tasks.embed import EmbedConfig

        dcfg.embed = EmbedConfig(model=cfg.embed_model)
    disc = discover_tasks(store, dcfg)
    out["discovered"] = {"tasks": len(disc.tasks), "unassigned": disc.n_unassigned,
                         "seconds": round(disc.seconds, 1)}
    return out


def _unassigned(store: TraceStore) -> Any:
    from protege.store.schema import traces

    with store.read() as conn:
        ids = [r.id for r in conn.execute(
            sa.select(traces.c.id).where(traces.c.task_id.is_(None), traces.c.status == "ok"))]
    for start in range(0, len(ids), 1000):
        yield from store.iter_traces(ids=ids[start : start + 1000])


def _curated_task_counts(store: TraceStore) -> dict[str, int]:
    from protege.curate.migrations import curated
    from protege.store.schema import traces

    q = (
        sa.select(traces.c.task_id, sa.func.count())
        .select_from(curated.join(traces, traces.c.id == curated.c.trace_id))
        .where(curated.c.kept == 1, traces.c.task_id.is_not(None), traces.c.served_by != "student")
        .group_by(traces.c.task_id)
    )
    with store.read() as conn:
        return {r[0]: int(r[1]) for r in conn.execute(q)}


def _assign(store: TraceStore, cfg: FlywheelConfig) -> dict[str, Any]:
    """Give every recurring call site a task: discovery first, then fingerprints
    for what it left (a call site seen once is the long tail: it stays unassigned)."""
    found = _discover(store, cfg) if cfg.discover else None
    if found is not None:
        found["tasks"] = _curated_task_counts(store)
        return found
    groups: dict[str, list[str]] = {}
    for t in _unassigned(store):
        if t.served_by != "student":
            groups.setdefault(fingerprint_task_id(t.request), []).append(t.id)
    assigned = {tid: task for task, ids in groups.items() if len(ids) >= cfg.min_task_size for tid in ids}
    if assigned:
        store.set_task_ids(assigned)
    return {"how": "fingerprint", "assigned": len(assigned), "tasks": _curated_task_counts(store)}


def _scores(store: TraceStore, counts: dict[str, int]) -> dict[str, float]:
    """Specialisation score per task: the tasks stage's when it has one, else the traffic share."""
    total = sum(counts.values()) or 1
    scores = {t: n / total for t, n in counts.items()}
    try:
        from protege.tasks.migrations import tasks_table

        with store.read() as conn:
            for r in conn.execute(sa.select(tasks_table.c.id, tasks_table.c.specialisation_score)):
                if r.id in scores:
                    scores[r.id] = float(r.specialisation_score)
    except Exception:  # no tasks table yet
        pass
    return scores


def _adapter_refs(store: TraceStore, task_id: str) -> tuple[str, ...]:
    from protege.registry import Registry

    # Shadow results name the adapter by its ref (task:vN) or its registry id.
    recs = [r for r in Registry(store).list(task_id) if r.status in ("promoted", "shadow")]
    return tuple(r.ref for r in recs) + tuple(r.id for r in recs)


def _demote(store: TraceStore, task_id: str, adapter_id: str | None, reason: str) -> None:
    from protege.registry import Registry, RegistryError
    from protege.router.routes import set_route

    set_route(store, task_id, "off", reason=reason)
    if adapter_id:
        try:
            Registry(store).retire(adapter_id, reason)
        except RegistryError as exc:
            log.info("flywheel: %s", exc)


def _promote(store: TraceStore, cfg: FlywheelConfig, task_id: str, adapter_id: str, reason: str) -> dict[str, Any]:
    from protege.registry import Registry
    from protege.router.routes import set_route

    reg = Registry(store)
    rec = reg.resolve(adapter_id)
    if rec.status != "promoted":
        rec = reg.promote(adapter_id, reason)
    route = set_route(store, task_id, cfg.promote_mode, reason=reason)
    _save_state(store, task_id, state="promoted", reason=reason)
    return {"action": "promoted", "adapter": rec.ref, "route": route.label, "reason": reason}


def _shadow_check(store: TraceStore, cfg: FlywheelConfig, task_id: str, state: dict[str, Any]) -> dict[str, Any]:
    from protege.flywheel.drift import shadow_stats
    from protege.registry import Registry
    from protege.router.routes import set_route

    rec = Registry(store).resolve(state["adapter_id"])
    if rec.status == "promoted":  # a person promoted it (--approve) or another run did
        return _promote(store, cfg, task_id, rec.id, "promoted by approval")
    if rec.status == "retired":
        _save_state(store, task_id, state="retired", reason=rec.status_reason)
        return {"action": "retired", "reason": rec.status_reason or "retired"}
    sh = shadow_stats(store, task_id, adapter=rec.ref)
    if sh["n"] == 0:
        sh = shadow_stats(store, task_id, adapter=rec.id)
    out: dict[str, Any] = {"shadow": sh, "adapter": rec.ref}
    if sh["n"] < cfg.shadow_min_results:
        out.update(action="waiting", reason=f"{sh['n']}/{cfg.shadow_min_results} shadow comparisons so far")
        return out
    if sh["agreement"] >= cfg.shadow_min_agreement:
        reason = f"shadow agreement {sh['agreement']:.1%} over {sh['n']} calls"
        if cfg.approve:
            _save_state(store, task_id, state="awaiting_approval", reason=reason)
            out.update(action="awaiting_approval",
                       reason=f"{reason}; waiting for `protege adapters promote {rec.ref}`")
            return out
        out.update(_promote(store, cfg, task_id, rec.id, reason))
        return out
    reason = (f"shadow agreement {sh['agreement']:.1%} over {sh['n']} calls is below "
              f"{cfg.shadow_min_agreement:.0%}")
    Registry(store).retire(rec.id, reason)
    set_route(store, task_id, "off", reason=reason)
    _save_state(store, task_id, state="retired", reason=reason)
    out.update(action="retired", reason=reason)
    return out


def _dataset(store: TraceStore, cfg: FlywheelConfig, task_id: str) -> dict[str, Any]:
    from protege.datasets import DatasetConfig, build_dataset

    ds = build_dataset(store, task_id, DatasetConfig(max_examples=cfg.max_examples, seed=cfg.seed, test_frac=cfg.test_frac,
                                                             val_frac=cfg.val_frac))
    return {"version": ds.version, "hash": ds.hash, "counts": ds.manifest.get("counts"),
            "output_type": ds.manifest.get("output_type"), "reused": ds.reused, "path": str(ds.path)}


def _evaluate(store: TraceStore, cfg: FlywheelConfig, task_id: str, adapter_id: str, ds_version: str,
              predictors: dict[str, Any] | None, progress: bool = False) -> dict[str, Any]:
    from protege.evaluate import EvalConfig, evaluate_task
    from protege.progress import Bar

    ecfg = EvalConfig(sample=cfg.eval_sample, dataset_version=ds_version, seed=cfg.seed)
    bars: dict[str, Bar] = {}

    def advance(system: str, batch: int, total: int) -> None:
        if system not in bars:
            bars[system] = Bar(f"evaluate {task_id} ({system})", total).start()
        bars[system].update(advance=batch)

    try:
        rep = evaluate_task(store, task_id, adapter=adapter_id, baselines=cfg.eval_baselines, config=ecfg,
                            predictors=predictors, advance=advance if progress else None)
    finally:
        for bar in bars.values():
            bar.stop()
    share = rep.share_of_teacher
    student = rep.metric("student")
    teacher = rep.metric("teacher")
    return {
        "evaluation_id": rep.id,
        "n": rep.n_examples,
        "metric": rep.primary_metric,
        "student": None if student is None else student.to_dict(),
        "teacher": None if teacher is None else teacher.to_dict(),
        "share_of_teacher": None if share is None else share.to_dict(),
        "validity": rep.validity,
    }


def _gate(store: TraceStore, cfg: FlywheelConfig, task_id: str, adapter_id: str, evaluation_id: str | None,
          ds_info: dict[str, Any], train_info: dict[str, Any]) -> dict[str, Any]:
    from protege.evaluate import gate
    from protege.registry import Registry
    from protege.router.routes import set_route

    dec = gate(store, task_id, adapter_id, min_share=cfg.min_share, min_validity=cfg.min_validity,
               min_test_examples=cfg.min_test_examples, max_ci_width=cfg.max_ci_width, to="shadow",
               confidence_floor=cfg.confidence_floor, min_coverage=cfg.min_coverage,
               evaluation_id=evaluation_id)
    reg = Registry(store)
    out: dict[str, Any] = {"decision": dec.decision, "checks": [c.to_dict() for c in dec.checks],
                           "floor": dec.floor.to_dict() if dec.floor else None}
    trained = _trained_baseline(store, task_id, ds_info)
    if not dec.passed:
        reason = "gate failed: " + "; ".join(c.message for c in dec.failed_checks)
        rec = reg.resolve(adapter_id)
        if rec.status != "retired":
            reg.retire(adapter_id, reason)
        prev = reg.promoted(task_id)
        _save_state(store, task_id, state="promoted" if prev else "gated_out", reason=reason,
                    adapter_id=prev.id if prev else adapter_id, **trained)
        out.update(action="retired", reason=reason)
        return out
    reason = "gate passed"
    if dec.floor is not None:
        reason += (f" at confidence >= {dec.floor.min_confidence:.3g} ({dec.floor.coverage:.0%} of test answers;"
                   " the rest go to the teacher)")
    if reg.promoted(task_id) is not None or not cfg.shadow:
        # A student already serves this task (or shadowing is off): the new one
        # proved itself on the test set and replaces it directly.
        _save_state(store, task_id, adapter_id=adapter_id, **trained, state="shadow", reason=reason)
        if cfg.approve:
            _save_state(store, task_id, state="awaiting_approval", reason=reason)
            out.update(action="awaiting_approval",
                       reason=f"{reason}; waiting for `protege adapters promote {reg.resolve(adapter_id).ref}`")
            return out
        out.update(_promote(store, cfg, task_id, adapter_id, reason))
        return out
    route = set_route(store, task_id, "shadow", reason=reason)
    _save_state(store, task_id, adapter_id=adapter_id, **trained, state="shadow", reason=reason)
    out.update(action="shadow", route=route.label, reason=reason)
    return out


def _trained_baseline(store: TraceStore, task_id: str, ds_info: dict[str, Any]) -> dict[str, Any]:
    """What the student was trained on: counts, fingerprint mix, the cut-off time."""
    from protege.flywheel.drift import fingerprint_mix

    reqs = [t.request for t in store.iter_traces(task_id=task_id, status="ok")]
    return {
        "dataset_hash": ds_info.get("hash"),
        "trained_on": _curated_task_counts(store).get(task_id, 0),
        "trained_until": time.time(),
        "fingerprints": dumps(fingerprint_mix(reqs)),
    }


# -- the run --------------------------------------------------------------------------------


def run_flywheel(
    store: TraceStore,
    config: FlywheelConfig | None = None,
    *,
    resume: bool = True,
    progress: Progress | None = None,
    train_fn: Callable[..., Any] | None = None,
    predictors: dict[str, Any] | None = None,
    train_progress: bool = False,
) -> FlywheelReport:
    """One pass of the flywheel over the store. A run that crashed earlier
    resumes (with ``resume``) from its last finished step. ``train_fn``
    replaces ``train_adapter`` and ``predictors`` the evaluated systems (tests)."""
    cfg = config or FlywheelConfig()
    cfg.validate()
    say = progress or (lambda msg: log.info(msg))
    t0 = time.perf_counter()
    report = start_run(store, cfg, resume)
    run = Run(store, cfg, report, say)
    try:
        _run_steps(run, store, cfg, say, train_fn, predictors, train_progress)
        waiting = any(t.get("action") == "awaiting_approval" for t in report.tasks.values())
        report.status = "waiting_approval" if waiting else "done"
    except StepFailed as exc:
        report.status = "failed"
        report.error = str(exc)
    except BaseException as exc:  # Ctrl-C or a crash: store it, then let it go on
        report.status = "failed"
        report.error = f"{type(exc).__name__}: {exc}"
        report.seconds = time.perf_counter() - t0
        end_run(store, report)
        raise
    report.seconds = time.perf_counter() - t0
    end_run(store, report)
    return report


def _run_steps(run: Run, store: TraceStore, cfg: FlywheelConfig, say: Progress, train_fn: Any,
               predictors: Any, train_progress: bool) -> None:
    report = run.report
    if cfg.curate:
        run.step("curate", None, lambda: _curate(store, cfg))
    tasks = run.step("tasks", None, lambda: _assign(store, cfg))["tasks"]

    # Deployed students first: promote what proved itself in shadow, demote or
    # schedule a retrain on drift.
    states = task_states(store)
    retrain: dict[str, str] = {}
    for task_id, st in sorted(states.items()):
        if cfg.tasks and task_id not in cfg.tasks:
            continue
        if st["state"] in ("shadow", "awaiting_approval"):
            out = run.step("shadow", task_id, lambda t=task_id, s=st: _shadow_check(store, cfg, t, s))
            report.task(task_id).update(action=out.get("action"), reason=out.get("reason"))
        st = task_states(store).get(task_id, st)
        if st["state"] == "promoted":
            out = run.step("drift", task_id, lambda t=task_id, s=st: _drift(store, cfg, t, s))
            if out["action"] != "none":
                retrain[task_id] = "drift: " + "; ".join(out["reasons"])
                report.task(task_id).update(action=out["action"], reason=retrain[task_id])

    plan = run.step("plan", None, lambda: _plan(store, cfg, tasks, retrain))
    for task_id, why in plan["skip"].items():
        report.task(task_id).setdefault("action", "skip")
        report.task(task_id).setdefault("reason", why)
    for task_id in plan["train"]:
        t = report.task(task_id)
        t["why"] = plan["why"][task_id]
        ds = run.step("dataset", task_id, lambda tid=task_id: _dataset(store, cfg, tid))
        st = task_states(store).get(task_id) or {}
        if ds["output_type"] not in cfg.output_types:
            t.update(action="skip", reason=f"output type {ds['output_type']} is not trained")
            continue
        if not cfg.force and st.get("dataset_hash") == ds["hash"] and st.get("state") in ("promoted", "shadow", "gated_out"):
            t.update(action="skip", reason="same dataset as the last training")
            continue
        base = run.step("select", task_id, lambda tid=task_id, d=ds: select_base(store, cfg, tid, d))["base"]
        if cfg.recipes:
            tr = run.step("recipes", task_id, lambda tid=task_id, d=ds, b=base:
                          recipe_search(store, cfg, tid, d, train_fn, train_progress, b, predictors))
            t["trials"] = tr["trials"]
        else:
            tr = run.step("train", task_id,
                          lambda tid=task_id, d=ds, b=base: train_student(store, cfg, tid, d, train_fn, train_progress, b))
        ev = run.step("evaluate", task_id,
                      lambda tid=task_id, a=tr["adapter_id"], v=ds["version"]:
                      _evaluate(store, cfg, tid, a, v, predictors, train_progress))
        g = run.step("gate", task_id, lambda tid=task_id, a=tr["adapter_id"], e=ev["evaluation_id"], d=ds, r=tr:
                     _gate(store, cfg, tid, a, e, d, r))
        t.update(adapter=tr["adapter"], evaluation=ev, action=g["action"], reason=g.get("reason"),
                 route=g.get("route"), floor=g.get("floor"))


def _drift(store: TraceStore, cfg: FlywheelConfig, task_id: str, st: dict[str, Any]) -> dict[str, Any]:
    from protege.flywheel.drift import check_drift

    res = check_drift(store, task_id, st, cfg, adapter_refs=_adapter_refs(store, task_id))
    out = res.to_dict()
    if res.action == "demote":
        reason = "; ".join(res.reasons)
        _demote(store, task_id, st.get("adapter_id"), reason)
        _save_state(store, task_id, state="demoted", reason=reason)
        out["reason"] = reason
    elif res.action == "retrain":
        out["reason"] = "; ".join(res.reasons)
        _save_state(store, task_id, reason=out["reason"])
    return out


def _plan(store: TraceStore, cfg: FlywheelConfig, counts: dict[str, int], retrain: dict[str, str]) -> dict[str, Any]:
    """Which tasks train this run, and why the others do not."""
    states = task_states(store)
    scores = _scores(store, counts)
    want: list[tuple[float, str, str]] = []
    skip: dict[str, str] = {}
    from protege.evaluate.gate import default_min_examples

    gate_min = cfg.min_test_examples if cfg.min_test_examples is not None else default_min_examples(cfg.min_share)
    for task_id, n in sorted(counts.items()):
        if cfg.tasks and task_id not in cfg.tasks:
            continue
        st = states.get(task_id)
        score = scores.get(task_id, 0.0)
        if task_id in retrain:
            want.append((score, task_id, retrain[task_id]))
            continue
        if n < cfg.min_examples:
            skip[task_id] = f"{n} examples < {cfg.min_examples}"
            continue
        if int(min(n, cfg.max_examples or n) * cfg.test_frac) < gate_min:
            # The gate could not pass it on evidence alone: do not spend a training on it.
            skip[task_id] = (f"{n} examples leave ~{int(min(n, cfg.max_examples or n) * cfg.test_frac)} test examples"
                             f" < the gate's {gate_min}")
            continue
        if score < cfg.min_score:
            skip[task_id] = f"specialisation score {score:.2f} < {cfg.min_score:.2f}"
            continue
        if st is None or st["state"] == "new":
            want.append((score, task_id, f"new task with {n} examples"))
            continue
        if cfg.force and st["state"] not in ("shadow", "awaiting_approval"):
            want.append((score, task_id, "forced retraining"))
            continue
        if st["state"] in ("shadow", "awaiting_approval"):
            skip[task_id] = f"student in {st['state']}"
            continue
        new = n - int(st["trained_on"] or 0)
        need = max(cfg.retrain_min_new, int(cfg.retrain_min_new_frac * int(st["trained_on"] or 0)))
        if new >= need:
            want.append((score, task_id, f"{new} new examples since the last training (>= {need})"))
        else:
            skip[task_id] = f"{new} new examples since the last training (< {need})"
    want.sort(key=lambda x: (-x[0], x[1]))
    chosen = want[: cfg.max_tasks]
    for _, task_id, _why in want[cfg.max_tasks:]:
        skip[task_id] = f"beyond the {cfg.max_tasks} best tasks of this run"
    return {"train": [t for _, t, _ in chosen], "why": {t: w for _, t, w in chosen}, "skip": skip,
            "scores": {t: round(s, 4) for t, s in scores.items()}, "counts": Counter(counts)}


def run_status(store: TraceStore, limit: int = 5) -> dict[str, Any]:
    """Recent runs with their steps, and every task's flywheel state."""
    with store.read() as conn:
        runs = [dict(r._mapping) for r in conn.execute(
            sa.select(runs_table).order_by(runs_table.c.started_at.desc()).limit(limit))]
        for r in runs:
            r["steps"] = [dict(s._mapping) for s in conn.execute(
                sa.select(steps_table).where(steps_table.c.run_id == r["id"]).order_by(steps_table.c.seq))]
    for r in runs:
        for k in ("config", "summary"):
            r[k] = json.loads(r[k]) if r.get(k) else None
        for s in r["steps"]:
            s["outcome"] = json.loads(s["outcome"]) if s.get("outcome") else None
    states = task_states(store)
    for s in states.values():
        s.pop("centroid", None)
        s["fingerprints"] = json.loads(s["fingerprints"]) if s.get("fingerprints") else {}
    return {"runs": runs, "tasks": states}
