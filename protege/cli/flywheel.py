"""`protege flywheel`: the curate-train-evaluate-promote loop."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click

from protege.cli.common import (
    UserError,
    config_option,
    console,
    db_option,
    json_option,
    open_store_or_fail,
    parse_duration,
    print_json,
)
from protege.flywheel.config import FlywheelConfig
from protege.train.config import TrainConfig


@click.group()
def flywheel() -> None:
    """Turn captured traffic into students and move traffic to them, again as it changes."""


def _print_report(rep: Any, names: dict[str, str]) -> None:
    from rich.table import Table

    c = console()
    c.print(f"[bold]flywheel run {rep.run_id}[/]: {rep.status} in {rep.seconds:.0f}s"
            + (" (resumed)" if rep.resumed else ""))
    if rep.error:
        c.print(f"[red]{rep.error}[/]")
    table = Table("task", "name", "action", "adapter", "share of teacher", "why")
    for task_id, t in sorted(rep.tasks.items()):
        ev = t.get("evaluation") or {}
        share = ev.get("share_of_teacher") or {}
        s = (f"{share['value']:.2f} [{share['low']:.2f}, {share['high']:.2f}]"
             if share.get("value") is not None and share.get("low") is not None else "")
        table.add_row(task_id, names.get(task_id, ""), str(t.get("action", "")), str(t.get("adapter") or ""), s, str(t.get("reason") or ""))
    c.print(table if rep.tasks else "no tasks yet: send traffic through the gateway first")


@flywheel.command("run")
@click.option("--once", "once", is_flag=True, help="One pass, then exit (the default).")
@click.option("--every", default=None, metavar="DURATION", help="Run again every DURATION (e.g. 1h, 30m).")
@click.option("--approve", is_flag=True, help="Stop before promotion; promote with `protege adapters promote`.")
@config_option(FlywheelConfig, "base", metavar="MODEL")
@config_option(FlywheelConfig, "min_examples")
@config_option(FlywheelConfig, "max_tasks")
@click.option("--task", "tasks", multiple=True, help="Only this task (repeatable).")
@config_option(TrainConfig, "max_steps")
@click.option("--no-shadow", is_flag=True, help="Promote as soon as the gate passes (no shadow phase).")
@config_option(FlywheelConfig, "promote_mode", metavar="live|canary:PCT")
@click.option("--force", is_flag=True, help="Retrain every eligible task even without new data.")
@click.option("--no-resume", is_flag=True, help="Start afresh even if the last run crashed.")
@db_option
@json_option
def run_cmd(once: bool, every: str | None, approve: bool, base: str | None, min_examples: int | None,
            max_tasks: int | None, tasks: tuple[str, ...], max_steps: int | None, no_shadow: bool,
            promote_mode: str | None, force: bool, no_resume: bool, db_url: str | None, as_json: bool) -> None:
    """Curate new traces, find tasks, train, evaluate and gate students, shadow, promote."""
    from protege.flywheel import FlywheelConfig, run_flywheel
    from protege.tasks.discover import task_names

    if once and every:
        raise UserError("--once and --every exclude each other")
    cfg = FlywheelConfig(approve=approve, force=force)
    if base:
        cfg.base = base
    if min_examples is not None:
        cfg.min_examples = min_examples
    if max_tasks is not None:
        cfg.max_tasks = max_tasks
    if tasks:
        cfg.tasks = tuple(tasks)
    if max_steps is not None:
        cfg.train.max_steps = max_steps
    if no_shadow:
        cfg.shadow = False
    if promote_mode:
        cfg.promote_mode = promote_mode
    try:
        cfg.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    period = parse_duration(every) if every else None
    store = open_store_or_fail(db_url)
    c = console()
    while True:
        with c.status("flywheel ...") as status:
            rep = run_flywheel(store, cfg, resume=not no_resume, progress=lambda m: status.update(f"flywheel: {m}"),
                               train_progress=not as_json)
        if as_json:
            print_json(rep.to_dict())
        else:
            _print_report(rep, task_names(store))
        if period is None:
            if rep.status == "failed":
                raise SystemExit(1)
            return
        c.print(f"next run in {every} (Ctrl-C to stop)")
        time.sleep(period)


@flywheel.command("status")
@click.option("--runs", type=int, default=5, help="How many recent runs to show.")
@db_option
@json_option
def status_cmd(runs: int, db_url: str | None, as_json: bool) -> None:
    """Recent flywheel runs, their steps, and each task's state."""
    from rich.table import Table

    from protege.flywheel import run_status

    st = run_status(open_store_or_fail(db_url), limit=runs)
    if as_json:
        print_json(st)
        return
    c = console()
    t = Table("run", "status", "started", "steps", "failed step")
    for r in st["runs"]:
        failed = next((s["step"] for s in r["steps"] if s["status"] == "failed"), "")
        started = dt.datetime.fromtimestamp(r["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
        t.add_row(r["id"], r["status"], started, str(len(r["steps"])), failed)
    c.print(t if st["runs"] else "no flywheel runs yet: `protege flywheel run`")
    tt = Table("task", "state", "adapter", "trained on", "reason")
    for task_id, s in sorted(st["tasks"].items()):
        tt.add_row(task_id, s["state"], s.get("adapter_id") or "", str(s["trained_on"]), s.get("reason") or "")
    if st["tasks"]:
        c.print(tt)


@flywheel.command("trials")
@click.argument("task", required=False)
@db_option
@json_option
def trials_cmd(task: str | None, db_url: str | None, as_json: bool) -> None:
    """Recipe-search trials (``recipes`` in the flywheel config): each recipe's
    validation score and which one was kept."""
    from rich.table import Table

    from protege.flywheel.students import recipe_trials

    rows = recipe_trials(open_store_or_fail(db_url), task)
    if as_json:
        print_json(rows)
        return
    c = console()
    if not rows:
        c.print("no recipe trials yet: set `recipes` in the flywheel config")
        return
    t = Table("task", "adapter", "recipe", "validation score", "best val loss", "train s", "kept", "status")
    for r in rows:
        score = r.get("validation_score")
        loss = r.get("best_val_loss")
        t.add_row(r["task_id"], r["adapter"], json.dumps(r["recipe"]), "" if score is None else f"{score:.3f}",
                  "" if loss is None else f"{loss:.3f}", str(round(r.get("train_time_s") or 0)),
                  "yes" if r.get("chosen") else "", r["status"])
    c.print(t)
