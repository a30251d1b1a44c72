"""``protege report``: the HTML page, its data as JSON, a summary in the terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from protege.cli.common import (
    UserError,
    console,
    db_option,
    friendly_errors,
    open_store_or_fail,
    parse_duration,
)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def _usd(x: float | None) -> str:
    from protege.report.html import usd

    return usd(x)


def _interval(iv: dict[str, Any] | None) -> str:
    if not iv or iv.get("value") is None:
        return "–"
    if iv.get("low") is None or iv.get("high") is None:
        return f"{iv['value']:.3f}"
    return f"{iv['value']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"


def print_summary(data: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    tot = data["totals"]
    if not tot["calls"] and not data["tasks"]:
        con.print("No traffic captured yet: point an agent at `protege serve` and run this again.")
        return
    con.print(
        f"[bold]{tot['calls']:,}[/] calls · [green]{_pct(tot['student_share'])}[/] served by students · "
        f"spent [bold]{_usd(tot['cost_usd'])}[/] · saved [bold green]{_usd(tot['saved_usd'])}[/] "
        f"(teacher-only {_usd(tot['teacher_only_cost_usd'])}) · errors: {tot['errors']:,}"
    )
    table = Table(title="Tasks", title_justify="left", header_style="bold")
    for name, justify in (
        ("task", "left"),
        ("calls", "right"),
        ("traffic", "right"),
        ("cost", "right"),
        ("served t/s/f", "right"),
        ("route", "left"),
        ("student quality", "right"),
        ("share of teacher [95% CI]", "right"),
        ("gate", "left"),
        ("shadow agree", "right"),
        ("saved", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for t in data["tasks"]:
        q = t.get("quality") or {}
        gate = t.get("gate")
        gate_text = "–"
        if gate:
            failed = [c["name"] for c in gate.get("checks", []) if not c.get("ok")]
            color = "green" if gate["decision"] == "pass" else "red"
            gate_text = f"[{color}]{gate['decision']}[/]" + (f" ({', '.join(failed)})" if failed else "")
        sh = t.get("shadow")
        served = t["served"]
        quality = "–"
        if q.get("student") is not None:
            quality = f"{q['student']:.3f} {q.get('primary_metric') or ''}".strip()
        table.add_row(
            t["task_id"] + (f"\n[dim]{t['label']}[/]" if t.get("label") else ""),
            f"{t['calls']:,}",
            _pct(t["traffic_share"]),
            _usd(t["cost_usd"]),
            f"{served['teacher']}/{served['student']}/{served['fallback']}",
            (t.get("route") or {}).get("label") or "–",
            quality,
            _interval(q.get("share_of_teacher")),
            gate_text,
            _pct(sh.get("agreement")) if sh else "–",
            _usd(t["saved_usd"]),
        )
    con.print(table)
    fr = data["fallback_reasons"]
    if fr["total"]:
        kinds = ", ".join(f"{r['kind']} {r['count']}" for r in fr["by_kind"][:6])
        con.print(f"Fallbacks: {fr['total']:,} ({kinds})", markup=False)


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the HTML report here (default: report.html, unless --format json).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report's data as JSON to this file.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table: summary in the terminal; json: the report's data on stdout.",
)
@click.option(
    "--since", default=None, metavar="DURATION", help="Only traffic of the last DURATION (e.g. 7d, 24h)."
)
@db_option
@friendly_errors
def report(out: Path | None, json_path: Path | None, fmt: str, since: str | None, db_url: str | None) -> None:
    """Per-task quality with confidence intervals, the cost/quality frontier,
    traffic and who served it, fallback reasons and savings: a self-contained
    HTML page (plots inline, nothing fetched), the same data as JSON, and a
    summary here. `protege serve` shows it live at /ui."""
    from protege.report import collect_report
    from protege.report.html import render_html

    since_ts = time.time() - parse_duration(since) if since else None
    store = open_store_or_fail(db_url)
    try:
        data = collect_report(store, since=since_ts)
    finally:
        store.close()
    if json_path is not None:
        _write(json_path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    if out is None and fmt == "table":
        out = Path("report.html")
    if out is not None:
        _write(out, render_html(data))
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    print_summary(data)
    written = [str(p) for p in (out, json_path) if p is not None]
    click.echo("wrote " + ", ".join(written))
