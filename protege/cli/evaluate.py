"""``protege eval`` and ``protege gate``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import click

from protege.cli.common import (
    UserError,
    console,
    db_option,
    friendly_errors,
    json_option,
    open_store_or_fail,
    print_json,
)

if TYPE_CHECKING:
    from protege.store.db import TraceStore

SYSTEM_LABELS = {
    "student": "student",
    "base_zero_shot": "base zero-shot",
    "base_few_shot": "base few-shot",
    "teacher": "teacher",
}


def _cell(iv: Any, pct: bool = True) -> str:
    if iv is None or iv.value is None or math.isnan(iv.value):
        return "-"
    if iv.low is None or math.isnan(iv.low):
        return f"{iv.value:.3f}"
    return f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def _money(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:.4f}" if x >= 0.01 or x == 0 else f"${x:.2g}"


def render_report(report: Any) -> None:
    from rich.table import Table

    con = console()
    names = [n for n in ("student", "base_zero_shot", "base_few_shot", "teacher") if n in report.systems]
    title = (
        f"{report.task_id}  ({report.output_type}, {report.n_examples} test examples"
        f"{', adapter ' + report.adapter_id if report.adapter_id else ''})"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for n in names:
        table.add_column(SYSTEM_LABELS[n], justify="right")
    metric_names: list[str] = []
    for n in names:
        for m in report.systems[n].metrics:
            if m not in metric_names:
                metric_names.append(m)
    for m in metric_names:
        label = f"[bold]{m}[/bold] (primary)" if m == report.primary_metric else m
        table.add_row(label, *[_cell(report.systems[n].metrics.get(m)) for n in names])
    if any(report.systems[n].vs_ground_truth for n in names):
        table.add_section()
        table.add_row(
            "exact_call_match vs ground truth",
            *[_cell((report.systems[n].vs_ground_truth or {}).get("exact_call_match")) for n in names],
        )
    table.add_section()
    table.add_row(
        "seconds per call",
        *[
            "-" if report.systems[n].seconds_per_call is None else f"{report.systems[n].seconds_per_call:.3f}"
            for n in names
        ],
    )
    table.add_row(
        "latency ms (1 call alone)",
        *[
            "-" if report.systems[n].latency_ms is None else f"{report.systems[n].latency_ms:.1f}"
            for n in names
        ],
    )
    table.add_row(
        "tokens/s",
        *[
            "-" if report.systems[n].tokens_per_s is None else f"{report.systems[n].tokens_per_s:.1f}"
            for n in names
        ],
    )
    table.add_row("cost per 1k calls", *[_money(report.systems[n].cost_per_1k) for n in names])
    for n in names:
        if report.systems[n].error:
            con.print(f"[yellow]{SYSTEM_LABELS[n]} failed: {report.systems[n].error}[/yellow]")
    con.print(table)
    if report.share_of_teacher:
        con.print(
            f"share of teacher quality ({report.primary_metric}, {report.share_basis}): "
            f"[bold]{_cell(report.share_of_teacher)}[/bold]"
        )
    cost = report.cost or {}
    if cost.get("saving") is not None:
        con.print(
            f"cost per 1k calls: student {_money(cost.get('student_per_1k'))} "
            f"({cost.get('student_device')}, ${cost.get('student_usd_per_hour')}/h) vs teacher "
            f"{_money(cost.get('teacher_per_1k'))} ({cost.get('teacher_source')}): saving {cost['saving']:.1%}"
        )
    if report.bfcl:
        b = report.bfcl
        if not b.get("available"):
            con.print(f"[yellow]BFCL checker unavailable: {b.get('reason')}[/yellow]")
        else:
            con.print(
                f"BFCL AST checker: accuracy {_fmt(b.get('bfcl_accuracy'))} vs protege {_fmt(b.get('protege_accuracy'))}"
                f" on {b['compared']} examples; agree on {b['agree']}"
            )
            for d in b.get("disagreements", [])[:20]:
                con.print(f"  {d['id']}: protege={d['protege']} bfcl={d['bfcl']}: {d['explanation']}")
    if report.id:
        con.print(f"[dim]stored as evaluation {report.id}[/dim]")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


@click.command("eval")
@click.argument("task")
@click.option(
    "--adapter", default=None, metavar="V", help="Adapter version or id (default: the task's newest)."
)
@click.option("--baselines/--no-baselines", default=True, show_default=True, help="Score the base model too.")
@click.option(
    "--base", default=None, metavar="MODEL", help="Base model for the baselines when no adapter exists."
)
@click.option(
    "--checker", type=click.Choice(["bfcl"]), default=None, help="Also score with BFCL's AST checker."
)
@click.option("--sample", type=int, default=None, metavar="N", help="Evaluate on N test examples only.")
@click.option("--judge", is_flag=True, help="Free-text tasks: LLM judge run by the teacher (PROTEGE_TEACHER).")
@click.option("--judge-model", default="gpt-4o-mini", show_default=True, help="Model the judge runs on.")
@click.option("--resamples", type=int, default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--usd-per-hour", type=float, default=None, help="Price of the student's hardware per hour.")
@click.option(
    "--latency-samples",
    type=int,
    default=5,
    show_default=True,
    help="Examples answered alone to time latency.",
)
@db_option
@json_option
@friendly_errors
def eval_(
    task: str,
    adapter: str | None,
    baselines: bool,
    base: str | None,
    checker: str | None,
    sample: int | None,
    judge: bool,
    judge_model: str,
    resamples: int,
    seed: int,
    usd_per_hour: float | None,
    latency_samples: int,
    db_url: str | None,
    as_json: bool,
) -> None:
    """Evaluate TASK's student against the base model and the teacher on the
    held-out test split, with 95% bootstrap intervals."""
    from protege.evaluate.cost import CostConfig
    from protege.evaluate.runner import EvalConfig, evaluate_task

    if sample is not None and sample < 1:
        raise UserError("--sample must be at least 1")
    store = open_store_or_fail(db_url)
    config = EvalConfig(
        sample=sample,
        base=base,
        checker=checker,
        judge=judge,
        judge_model=judge_model,
        n_resamples=resamples,
        seed=seed,
        latency_samples=latency_samples,
        cost=CostConfig(device_usd_per_hour=usd_per_hour),
    )
    progress = None if as_json else (lambda msg: click.echo(msg, err=True))
    try:
        report = evaluate_task(
            store, task, adapter=adapter, baselines=baselines, config=config, progress=progress
        )
    finally:
        store.close()
    if as_json:
        from protege.evaluate.records import _clean

        print_json(_clean(report.to_dict()))
    else:
        render_report(report)


@click.command("gate")
@click.argument("task")
@click.option("--adapter", required=True, metavar="V", help="Adapter version or id.")
@click.option(
    "--min-share", type=float, default=0.95, show_default=True, help="Lower CI bound of student/teacher."
)
@click.option(
    "--min-validity", type=float, default=0.99, show_default=True, help="Parseable, schema-valid share."
)
@click.option(
    "--min-examples", type=int, default=None, help="Test examples needed (default: max(30, 3/(1-min-share)))."
)
@click.option(
    "--max-ci-width", type=float, default=0.20, show_default=True, help="Widest acceptable interval."
)
@click.option("--to", "to", type=click.Choice(["shadow", "promoted"]), default="shadow", show_default=True)
@click.option(
    "--confidence-floor/--no-confidence-floor",
    default=True,
    show_default=True,
    help="When the whole task falls short, serve only answers above a confidence floor that passes.",
)
@click.option(
    "--min-coverage", type=float, default=0.2, show_default=True,
    help="Share of test answers a confidence floor must still serve.",
)
@db_option
@json_option
@friendly_errors
def gate(
    task: str,
    adapter: str,
    min_share: float,
    min_validity: float,
    min_examples: int | None,
    max_ci_width: float,
    to: str,
    confidence_floor: bool,
    min_coverage: float,
    db_url: str | None,
    as_json: bool,
) -> None:
    """Release gate: may TASK's adapter take traffic? Exit 1 when it may not."""
    from protege.evaluate.gate import gate as run_gate

    store = open_store_or_fail(db_url)
    try:
        adapter_id = _adapter_id(store, task, adapter)
        decision = run_gate(
            store,
            task,
            adapter_id,
            min_share=min_share,
            min_validity=min_validity,
            min_test_examples=min_examples,
            max_ci_width=max_ci_width,
            to=to,
            confidence_floor=confidence_floor,
            min_coverage=min_coverage,
        )
    finally:
        store.close()
    if as_json:
        print_json(decision.to_dict())
    else:
        con = console()
        for c in decision.checks:
            mark = "[green]ok[/green]  " if c.ok else "[red]FAIL[/red]"
            short = "" if c.ok or c.gap is None else f"  (short by {c.gap:.3f})"
            con.print(f"{mark} {c.name}: {c.message}{short}")
        if decision.passed:
            moved = f"; adapter set to {decision.status}" if decision.status else ""
            if decision.floor is not None:
                f = decision.floor
                moved += (f"; serves answers with confidence >= {f.min_confidence:.3g}"
                          f" ({f.coverage:.0%} of test answers), the rest go to the teacher")
            con.print(f"[bold green]PASS[/bold green] {task} {adapter}{moved}")
        else:
            con.print(
                f"[bold red]FAIL[/bold red] {task} {adapter}: {', '.join(c.name for c in decision.failed_checks)}"
            )
    if not decision.passed:
        raise SystemExit(1)


def _adapter_id(store: TraceStore, task: str, adapter: str) -> str:
    """Registry id of a version; evaluations are stored under the id."""
    try:
        from protege.evaluate.runner import resolve_adapter

        ref = resolve_adapter(store, task, adapter)
    except ValueError:
        return adapter
    return ref.id if ref else adapter


def _call_text(answer: dict[str, Any] | None) -> str:
    if not answer:
        return ""
    import json

    parts = [str(answer["content"])[:120]] if answer.get("content") else []
    for c in answer.get("tool_calls") or []:
        args = c.get("arguments")
        args = json.dumps(args, ensure_ascii=False, sort_keys=True) if not isinstance(args, str) else args
        parts.append(f"{c.get('name')}({args})")
    return "\n".join(parts)


@click.command("answers")
@click.argument("task")
@click.option("--evaluation", default=None, metavar="ID", help="Evaluation id (default: the task's newest).")
@click.option("--all", "show_all", is_flag=True, help="Every answer, not only the student's misses.")
@click.option("--limit", type=int, default=20, show_default=True, help="Answers shown (0: every one).")
@db_option
@json_option
@friendly_errors
def answers(task: str, evaluation: str | None, show_all: bool, limit: int, db_url: str | None,
            as_json: bool) -> None:
    """The answers of TASK's newest evaluation: where the student differs from
    the reference, surest first (the misses a confidence floor would still serve)."""
    from pathlib import Path

    from protege.evaluate.answers import read_answers
    from protege.evaluate.records import load_report
    from protege.tasks.manage import find_task

    store = open_store_or_fail(db_url)
    try:
        try:
            task_id = find_task(store, task).id
        except ValueError:
            task_id = task  # evaluations of a task since forgotten by discovery
        report = load_report(store, evaluation_id=evaluation, task_id=None if evaluation else task_id)
    finally:
        store.close()
    if report is None:
        raise UserError(f"no evaluation of {task!r} (run `protege eval {task}`)")
    if not report.answers_path or not Path(report.answers_path).exists():
        raise UserError(f"evaluation {report.id} kept no answers (evaluated before they were kept, "
                        "or its artifacts were moved): run `protege eval` again")
    rows = read_answers(report.answers_path)
    n = len(rows)
    right = sum(1 for r in rows if (r.get("student_right") or 0) >= 1)
    if not show_all:
        rows = [r for r in rows if r.get("student_right") is not None and r["student_right"] < 1]
    # Ordered by the signal the gate would choose: the best-ranking one on validation.
    from protege.evaluate.selective import best_signal

    val = (report.selective or {}).get("validation") or {}
    signal = best_signal(val["signals"], val["student"]) if val.get("signals") else "min_prob"
    rows.sort(key=lambda r: -((r.get("signals") or {}).get(signal) or -math.inf))
    if limit:
        rows = rows[:limit]
    if as_json:
        print_json({"evaluation": report.id, "task_id": report.task_id, "answers": n, "shown": rows})
        return
    from rich.table import Table

    t = Table(title=f"{report.task_id}: student right on {right} of {n} ({report.share_basis or 'reference'})")
    for col in ("turn", "reference", "student", signal):
        t.add_column(col, overflow="fold")
    for r in rows:
        turn = r.get("turn") or {}
        conf = (r.get("signals") or {}).get(signal)
        t.add_row(f"{turn.get('role')}: {str(turn.get('content'))[:160]}", _call_text(r.get("reference")),
                  _call_text(r.get("student")), "" if conf is None else f"{conf:.3f}")
    console().print(t)
