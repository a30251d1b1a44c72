"""``protege logs ...`` and ``protege feedback``: look at, import, export and
prune captured traces, and attach feedback to them."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from protege.cli.common import (
    UserError,
    console,
    db_option,
    friendly_errors,
    json_option,
    open_store_or_fail,
    parse_duration,
    print_json,
)

STATUS = click.Choice(["ok", "error"])


def _when(ts: float | None, short: bool = False) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def _since(text: str | None) -> float | None:
    return None if text is None else time.time() - parse_duration(text)


def _filters(
    task: str | None = None,
    task_id: str | None = None,
    client: str | None = None,
    status: str | None = None,
    served_by: str | None = None,
    model: str | None = None,
    session: str | None = None,
) -> dict[str, Any]:
    values = {
        "task_tag": task, "task_id": task_id, "client_id": client, "status": status,
        "served_by": served_by, "model": model, "session_id": session,
    }
    return {k: v for k, v in values.items() if v is not None}


def filter_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--task", help="Only this call-site tag (X-Protege-Task / workload_id)."),
        click.option("--task-id", help="Only traces assigned to this task."),
        click.option("--client", help="Only this client/app id."),
        click.option("--status", type=STATUS, help="Only ok or error calls."),
        click.option("--served-by", help="Only calls served by teacher, student or fallback."),
        click.option("--model", help="Only this requested model."),
        click.option("--session", help="Only this session (one agent run)."),
        click.option("--since", metavar="DURATION", help="Only the last DURATION (e.g. 24h, 7d)."),
    ]):
        fn = opt(fn)
    return fn


@contextmanager
def _progress(total: float | None, label: str) -> Any:
    """Progress on stderr (stdout carries the result): a bar on a terminal,
    otherwise, once the work has run 30 s, a plain line at most every 30 s."""
    from protege.progress import EVERY_S, Bar

    with Bar(label, int(total or 0), stream=sys.stderr, quiet_for=EVERY_S) as bar:

        def advance(n: float) -> None:
            bar.update(advance=int(n))

        yield advance


@click.group()
def logs() -> None:
    """Captured traces: list, show, stats, spool, import, export, prune."""


# -- list --------------------------------------------------------------------------
@logs.command("list")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1), help="How many (newest first).")
@filter_options
@db_option
@json_option
@friendly_errors
def list_(limit: int, since: str | None, db_url: str | None, as_json: bool, **kw: Any) -> None:
    """The newest traces."""
    from protege.stats import recent_traces

    store = open_store_or_fail(db_url)
    rows = recent_traces(store, limit=limit, since=_since(since), **_filters(**kw))
    if as_json:
        print_json(rows)
        return
    from rich import box
    from rich.table import Table

    out = console()
    wide = out.width >= 120
    table = Table(title=f"{len(rows)} most recent traces", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False, collapse_padding=True, padding=(0, 1))
    table.add_column("id", no_wrap=True, min_width=26)
    table.add_column("time (UTC)", no_wrap=True, min_width=11)
    # Fewer columns on a narrow terminal rather than every cell cut short.
    cols = ["client", "task", "model", "served by", "status", "latency", "tokens", "tools called"]
    if out.width < 100:
        cols = ["task", "status", "latency", "tools called"]
    elif not wide:
        cols = [c for c in cols if c not in ("served by", "tokens")]
    for col in cols:
        table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=min(len(col), 6),
                         justify="right" if col in ("latency", "tokens") else "left")
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/red] {r['http_status'] or ''}".strip()
        tokens = "-" if r["prompt_tokens"] is None else f"{r['prompt_tokens']}/{r['completion_tokens'] or 0}"
        cells = {
            "client": r["client_id"] or "-", "task": r["task_tag"] or r["task_id"] or "-", "model": r["model"] or "-",
            "served by": r["served_by"], "status": status, "latency": _ms(r["latency_ms"]), "tokens": tokens,
            "tools called": ", ".join(r["tools_called"]) or "-",
        }
        table.add_row(r["id"], _when(r["created_at"], short=not wide), *[cells[c] for c in cols])
    console().print(table)


# -- show --------------------------------------------------------------------------
def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            elif isinstance(p, dict):
                parts.append(f"<{p.get('type', 'part')}>")
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


def _message_lines(msg: dict[str, Any]) -> Any:
    from rich.text import Text

    role = str(msg.get("role", "?"))
    style = {"system": "magenta", "user": "cyan", "assistant": "green", "tool": "yellow"}.get(role, "white")
    out = Text()
    out.append(f"[{role}]", style=f"bold {style}")
    if msg.get("name") or msg.get("tool_call_id"):
        out.append(f" {msg.get('name') or ''} {msg.get('tool_call_id') or ''}".rstrip(), style="dim")
    text = _content_text(msg.get("content"))
    if text:
        out.append(" " + text)
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        out.append("\n  → ", style="bold")
        out.append(f"{fn.get('name')}", style="bold")
        out.append(f"({fn.get('arguments', '')})")
        if tc.get("id"):
            out.append(f"  {tc['id']}", style="dim")
    if msg.get("refusal"):
        out.append(f"\n  refusal: {msg['refusal']}", style="red")
    return out


@logs.command("show")
@click.argument("trace_id")
@db_option
@json_option
@friendly_errors
def show(trace_id: str, db_url: str | None, as_json: bool) -> None:
    """One trace: request messages, response, tool calls, error, timings.
    TRACE_ID may be a unique prefix."""
    store = open_store_or_fail(db_url)
    trace = store.get_trace(trace_id)
    if trace is None:
        raise UserError(f"no trace {trace_id!r} (see `protege logs list`)")
    feedback = store.feedback_for(trace_id=trace.id)
    if as_json:
        data = trace.to_dict()
        data["feedback"] = [vars(f) for f in feedback]
        print_json(data)
        return
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    c = console()
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    model = trace.model or "-"
    if trace.upstream_model and trace.upstream_model != trace.model:
        model += f" → {trace.upstream_model}"
    served = trace.served_by + (f" ({trace.adapter})" if trace.adapter else "")
    if trace.fallback_reason:
        served += f", fallback: {trace.fallback_reason}"
    rows = [
        ("time (UTC)", _when(trace.created_at)),
        ("source", trace.source),
        ("client", trace.client_id or "-"),
        ("session", trace.session_id or "-"),
        ("task", f"tag {trace.task_tag or '-'}, id {trace.task_id or '-'}"),
        ("model", model),
        ("served by", served),
        ("status", f"{trace.status}" + (f" (HTTP {trace.http_status})" if trace.http_status else "")),
        ("latency", f"{_ms(trace.latency_ms)}" + (f", first token {_ms(trace.ttft_ms)}" if trace.ttft_ms is not None else "")),
        ("tokens", "-" if trace.prompt_tokens is None else f"{trace.prompt_tokens} prompt, {trace.completion_tokens or 0} completion"),
        ("cost", _usd(trace.cost_usd)),
        ("tools offered", ", ".join(trace.tools_offered) or "-"),
        ("finish reason", (trace.finish_reason or "-") + (" (streamed)" if trace.stream else "")),
    ]
    for k, v in rows:
        info.add_row(k, Text(str(v)))
    c.print(Panel(info, title=f"trace {trace.id}", title_align="left"))

    req = trace.request or {}
    c.print(Text("request", style="bold underline"))
    for msg in req.get("messages") or []:
        if isinstance(msg, dict):
            c.print(_message_lines(msg))
    other = {k: v for k, v in req.items() if k not in ("messages", "tools", "model")}
    if other:
        c.print(Text("params: " + json.dumps(other, ensure_ascii=False), style="dim"))

    if trace.response:
        c.print(Text("response", style="bold underline"))
        for ch in trace.response.get("choices") or []:
            msg = ch.get("message") or {}
            line = _message_lines({"role": "assistant", **msg})
            if len(trace.response.get("choices") or []) > 1:
                line = Text(f"#{ch.get('index')} ", style="dim") + line
            c.print(line)
    if trace.error:
        c.print(Text("error: ", style="bold red") + Text(trace.error))
    for f in feedback:
        parts = [p for p in (f"score {f.score}" if f.score is not None else None, f.label, f.comment) if p]
        c.print(Text("feedback: ", style="bold") + Text(", ".join(parts)))


# -- stats -------------------------------------------------------------------------
@logs.command("stats")
@click.option("--by", type=click.Choice(["model", "upstream_model", "client", "task", "task_id", "served_by", "status",
                                       "source", "session"]),
              help="Break the figures down by this column.")
@filter_options
@db_option
@json_option
@friendly_errors
def stats(by: str | None, since: str | None, db_url: str | None, as_json: bool, **kw: Any) -> None:
    """Counts, errors, tokens, cost, latency and TTFT percentiles."""
    from protege.capture.spool import spool_path_for, spool_status
    from protege.stats import trace_stats

    store = open_store_or_fail(db_url)
    result = trace_stats(store, by=by, since=_since(since), **_filters(**kw))
    result["capture"] = spool_status(spool_path_for(store.url))
    if as_json:
        print_json(result)
        return
    from rich import box
    from rich.table import Table

    span = f"last {since}" if since else "all time"
    table = Table(title=f"traces, {span}" + (f", by {by}" if by else "") + "; latencies in ms",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  collapse_padding=True, padding=(0, 1))
    table.add_column(by or "", overflow="ellipsis", no_wrap=True, min_width=5, max_width=32)
    for col in ("calls", "err %", "tok in", "tok out", "cost $", "p50", "p95", "p99", "ttft p50"):
        table.add_column(col, justify="right", no_wrap=True)
    rows = [*result["groups"], {**result["total"], "key": "total"}] if by else [{**result["total"], "key": "all"}]

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.1f}"

    for g in rows:
        lat = g["latency_ms"]
        table.add_row(
            "-" if g["key"] is None else str(g["key"]),
            f"{g['count']:,}",
            f"{g['error_rate']:.1%}",
            f"{g['prompt_tokens']:,}",
            f"{g['completion_tokens']:,}",
            f"{g['cost_usd']:.4f}" if g["cost_usd"] < 100 else f"{g['cost_usd']:,.0f}",
            num(lat["p50"]), num(lat["p95"]), num(lat["p99"]), num(g["ttft_ms"]["p50"]),
            end_section=by is not None and len(rows) > 1 and g is rows[-2],
        )
    console().print(table)
    cap = result["capture"]
    if cap["spooled"] or cap["dead_letters"]:
        console().print(f"[yellow]{cap['spooled']:,} spooled traces not yet in the store, {cap['dead_letters']:,} "
                        f"dead letters[/] ({cap['spool']}): see `protege logs spool`")


# -- spool -------------------------------------------------------------------------
@logs.command("spool")
@click.option("--replay", is_flag=True, help="Put spooled traces and dead letters into the store now.")
@click.option("--spool", "spool_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The spool file (default: the store's own, under PROTEGE_HOME/spool).")
@db_option
@json_option
@friendly_errors
def spool(replay: bool, spool_path: Path | None, db_url: str | None, as_json: bool) -> None:
    """Traces waiting beside the store: spooled while it was down, or refused by
    it (dead letters, with their error class). --replay inserts them, each by its
    id, so a trace already stored is never stored twice."""
    from protege.capture.spool import replay_dead_letters, spool_path_for, spool_status, store_is_down
    from protege.capture.writer import CaptureWriter, WriterConfig

    store = open_store_or_fail(db_url)
    path = spool_path or spool_path_for(store.url)
    out: dict[str, Any] = {}
    if replay:
        writer = CaptureWriter(store, WriterConfig(spool_path=path))
        try:
            out["replayed"] = writer.replay()
            out["dead_letters_stored"], _ = replay_dead_letters(store, path)
        except Exception as exc:
            if not store_is_down(exc):
                raise
            raise UserError(f"the store stopped answering ({type(exc).__name__}); nothing is lost, "
                            "run this again once it is back") from None
        finally:
            writer.close()
    out.update(spool_status(path))
    if as_json:
        print_json(out)
        return
    if replay:
        click.echo(f"replayed {out['replayed']} spooled traces and {out['dead_letters_stored']} dead letters")
    click.echo(f"{out['spool']}: {out['spooled']} spooled traces, {out['dead_letters']} dead letters")


# -- import / export ---------------------------------------------------------------
@logs.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "flywheel", "openai"]), default="auto", show_default=True,
              help="flywheel: {timestamp, workload_id, client_id, request, response}; "
                   "openai: fine-tuning chat records {messages, tools}.")
@click.option("--source", default="import", show_default=True, help="Value of the traces' source column.")
@click.option("--skip-invalid", is_flag=True, help="Count and skip bad lines instead of stopping at the first.")
@db_option
@json_option
@friendly_errors
def import_(file: Path, fmt: str, source: str, skip_invalid: bool, db_url: str | None, as_json: bool) -> None:
    """Import traces from a JSONL FILE. Re-importing a file adds nothing twice."""
    from protege.capture.files import RecordError, import_jsonl

    if not file.is_file():
        raise UserError(f"no such file: {file}")
    store = open_store_or_fail(db_url, create=True)
    size = file.stat().st_size
    try:
        with _progress(size * (1 if skip_invalid else 2), f"importing {file.name}") as advance:
            result = import_jsonl(store, file, fmt=fmt, source=source, skip_invalid=skip_invalid, progress=advance)
    except RecordError as exc:
        raise UserError(
            f"{file}: {exc}; nothing was imported (fix the line, or pass --skip-invalid to skip bad lines)"
        ) from None
    if as_json:
        print_json(result.as_dict())
        return
    for err in result.errors:
        click.echo(f"skipped {err}", err=True)
    if result.skipped > len(result.errors):
        click.echo(f"... and {result.skipped - len(result.errors)} more bad lines", err=True)
    click.echo(
        f"imported {result.imported} traces from {file} ({result.read} records, "
        f"{result.duplicates} already stored, {result.skipped} invalid skipped)"
    )


@logs.command("export")
@click.option("--format", "fmt", type=click.Choice(["raw", "openai"]), default="raw", show_default=True,
              help="raw: verbatim request/response and every extracted column; openai: fine-tuning chat records.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@click.option("--limit", type=click.IntRange(1), help="At most this many traces (oldest first).")
@filter_options
@db_option
@friendly_errors
def export(fmt: str, out: Path | None, limit: int | None, since: str | None, db_url: str | None, **kw: Any) -> None:
    """Write traces as JSONL (oldest first). `openai` leaves out failed calls."""
    import itertools

    from protege.capture.files import export_jsonl

    store = open_store_or_fail(db_url)
    filters = {**_filters(**kw), "since": _since(since)}
    total = store.count_traces(**filters)
    if limit is not None:
        total = min(total, limit)
    traces = itertools.islice(store.iter_traces(**filters), limit)
    if out is None:
        written, left = export_jsonl(traces, sys.stdout, fmt=fmt)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".partial")
        with _progress(total, f"exporting to {out.name}") as advance, open(tmp, "w", encoding="utf-8") as fh:
            written, left = export_jsonl(traces, fh, fmt=fmt, progress=advance)
        tmp.replace(out)  # a reader never sees half a file
    note = f" ({left} failed calls left out)" if left else ""
    click.echo(f"exported {written} traces{note}" + (f" to {out}" if out else ""), err=True)


# -- prune -------------------------------------------------------------------------
@logs.command("prune")
@click.option("--older-than", required=True, metavar="DURATION", help="Delete traces older than this (e.g. 30d).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@db_option
@json_option
@friendly_errors
def prune(older_than: str, yes: bool, db_url: str | None, as_json: bool) -> None:
    """Delete traces (and their feedback) older than DURATION."""
    seconds = parse_duration(older_than)
    store = open_store_or_fail(db_url)
    doomed = store.count_traces(until=time.time() - seconds)
    if doomed and not yes:
        click.confirm(f"delete {doomed} traces older than {older_than} from {store.safe_url}?", abort=True)
    deleted = store.prune(seconds) if doomed else 0
    if as_json:
        print_json({"deleted": deleted})
    else:
        click.echo(f"deleted {deleted} traces older than {older_than}")


# -- feedback ----------------------------------------------------------------------
@click.command()
@click.option("--trace", "trace_id", metavar="ID", help="The trace (a unique prefix is enough).")
@click.option("--session", "session_id", metavar="ID", help="A whole session (one agent run).")
@click.option("--score", type=float, help="A number, e.g. 1 / 0 or a 1-5 rating.")
@click.option("--label", help="A label, e.g. good, bad, wrong_tool.")
@click.option("--comment", help="Free text.")
@db_option
@json_option
@friendly_errors
def feedback(
    trace_id: str | None, session_id: str | None, score: float | None, label: str | None,
    comment: str | None, db_url: str | None, as_json: bool,
) -> None:
    """Attach a score or label to a trace or a session."""
    from protege.store import Feedback

    if bool(trace_id) == bool(session_id):
        raise UserError("give exactly one of --trace ID or --session ID")
    if score is None and label is None:
        raise UserError("give a --score or a --label (or both)")
    store = open_store_or_fail(db_url)
    if trace_id:
        trace = store.get_trace(trace_id)
        if trace is None:
            raise UserError(f"no trace {trace_id!r} (see `protege logs list`)")
        trace_id = trace.id
    elif store.count_traces(session_id=session_id) == 0:
        raise UserError(f"no traces in session {session_id!r}")
    fb = store.add_feedback(Feedback(trace_id=trace_id, session_id=session_id, score=score, label=label, comment=comment))
    if as_json:
        print_json(vars(fb))
    else:
        click.echo(f"feedback {fb.id} recorded on {'trace ' + trace_id if trace_id else 'session ' + str(session_id)}")
