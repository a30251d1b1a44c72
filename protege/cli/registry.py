"""``protege adapters ...``: the adapter registry (list, show, promote, retire,
rollback, export)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from protege.cli.common import UserError, console, db_option, json_option, open_store_or_fail, print_json


def _when(ts: float | None) -> str:
    return "-" if not ts else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _registry(db_url: str | None) -> Any:
    from protege.registry import Registry

    return Registry(open_store_or_fail(db_url))


def _resolve(reg: Any, ref: str) -> Any:
    from protege.registry import RegistryError

    try:
        return reg.resolve(ref)
    except RegistryError as exc:
        raise UserError(str(exc)) from None


def _headline(metrics: dict[str, Any]) -> str:
    """The one or two numbers worth a table column."""
    for key in ("exact_call_match", "exact_match", "accuracy", "macro_f1", "val_loss", "eval_loss"):
        if key in metrics and isinstance(metrics[key], (int, float)):
            return f"{key}={metrics[key]:.3g}"
    return "-"


STATUS_STYLE = {"promoted": "bold green", "shadow": "yellow", "candidate": "cyan", "retired": "dim"}


@click.group()
def adapters() -> None:
    """Trained adapters: list, show, promote, retire, rollback, export."""


@adapters.command("list")
@click.option("--task", "task_id", help="Only this task.")
@click.option("--status", type=click.Choice(["candidate", "shadow", "promoted", "retired"]), help="Only this status.")
@db_option
@json_option
def list_(task_id: str | None, status: str | None, db_url: str | None, as_json: bool) -> None:
    """Registered adapters, newest first."""
    from protege.registry import Registry
    from protege.tasks.discover import task_names

    store = open_store_or_fail(db_url)
    recs = Registry(store).list(task_id=task_id, status=status)
    names = task_names(store)
    if as_json:
        print_json([{**r.to_dict(), "task": names.get(r.task_id)} for r in recs])
        return
    from rich.table import Table

    table = Table(title=f"{len(recs)} adapter(s)")
    for col in ("id", "ref", "task", "status", "base model", "dataset", "metrics", "created"):
        table.add_column(col)
    for r in recs:
        style = STATUS_STYLE.get(r.status, "")
        table.add_row(
            r.id, r.ref, names.get(r.task_id, ""), f"[{style}]{r.status}[/]" if style else r.status, r.base_model,
            r.dataset_id or "-", _headline(r.metrics), _when(r.created_at),
        )
    console().print(table)


@adapters.command("show")
@click.argument("ref")
@db_option
@json_option
def show(ref: str, db_url: str | None, as_json: bool) -> None:
    """One adapter (id, id prefix or TASK:vN) with its status history."""
    reg = _registry(db_url)
    rec = _resolve(reg, ref)
    history = reg.history(rec.id)
    if as_json:
        print_json({**rec.to_dict(), "history": [e.to_dict() for e in history]})
        return
    c = console()
    c.print(f"[bold]{rec.ref}[/]  {rec.id}")
    for label, value in (
        ("status", f"{rec.status} ({rec.status_reason or '-'})"), ("base model", rec.base_model),
        ("dataset", f"{rec.dataset_id or '-'}  hash {rec.dataset_hash or '-'}"), ("path", rec.path),
        ("created", _when(rec.created_at)), ("updated", _when(rec.updated_at)),
    ):
        c.print(f"  {label:<11} {value}")
    c.print("  metrics    " + (json.dumps(rec.metrics, sort_keys=True) if rec.metrics else "-"))
    c.print("  config     " + (json.dumps(rec.config, sort_keys=True) if rec.config else "-"))
    c.print("  history")
    for e in history:
        c.print(f"    {_when(e.at)}  {e.from_status or '-':>9} -> {e.to_status:<9} {e.reason or ''}")


def _move(ref: str, status: str, reason: str | None, db_url: str | None, as_json: bool) -> None:
    from protege.registry import RegistryError

    reg = _registry(db_url)
    rec = _resolve(reg, ref)
    try:
        rec = reg.set_status(rec.id, status, reason)
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(rec.to_dict())
    else:
        console().print(f"{rec.ref} ({rec.id}) is now [bold]{rec.status}[/]")


_reason = click.option("--reason", help="Why (kept in the adapter's history).")


@adapters.command("promote")
@click.argument("ref")
@_reason
@db_option
@json_option
def promote(ref: str, reason: str | None, db_url: str | None, as_json: bool) -> None:
    """Make REF the task's live adapter (the previous one is retired)."""
    _move(ref, "promoted", reason or "promoted by hand", db_url, as_json)


@adapters.command("shadow")
@click.argument("ref")
@_reason
@db_option
@json_option
def shadow(ref: str, reason: str | None, db_url: str | None, as_json: bool) -> None:
    """Put REF in shadow: it answers alongside the teacher, never to the client."""
    _move(ref, "shadow", reason or "shadowed by hand", db_url, as_json)


@adapters.command("retire")
@click.argument("ref")
@_reason
@db_option
@json_option
def retire(ref: str, reason: str | None, db_url: str | None, as_json: bool) -> None:
    """Take REF out of service."""
    _move(ref, "retired", reason or "retired by hand", db_url, as_json)


@adapters.command("rollback")
@click.argument("task_id")
@_reason
@db_option
@json_option
def rollback(task_id: str, reason: str | None, db_url: str | None, as_json: bool) -> None:
    """Re-promote the adapter TASK had before its current one."""
    from protege.registry import RegistryError

    try:
        rec = _registry(db_url).rollback(task_id, reason or "rolled back by hand")
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(rec.to_dict())
    else:
        console().print(f"{task_id}: {rec.ref} ({rec.id}) is promoted again")


@adapters.command("export")
@click.argument("ref")
@click.option(
    "--format", "fmt", type=click.Choice(["adapter", "merged", "gguf"]), default="adapter", show_default=True,
    help="adapter: the PEFT files; merged: base+adapter safetensors; gguf: for llama.cpp / Ollama.",
)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--outtype", type=click.Choice(["f16", "f32"]), default="f16", show_default=True, help="GGUF precision.")
@click.option("--force", is_flag=True, help="Replace a non-empty output directory.")
@db_option
def export(ref: str, fmt: str, out: str, outtype: str, force: bool, db_url: str | None) -> None:
    """Export adapter REF as files another runtime can load."""
    from protege.models.loader import ModelUnavailable
    from protege.registry.export import ExportError
    from protege.registry.export import export as do_export

    rec = _resolve(_registry(db_url), ref)
    kw: dict[str, Any] = {"overwrite": force}
    if fmt == "gguf":
        kw["outtype"] = outtype
    with console().status(f"exporting {rec.ref} as {fmt}..."):
        try:
            path = do_export(rec, fmt, out, **kw)
        except (ExportError, ModelUnavailable, ValueError) as exc:
            raise UserError(str(exc)) from None
    console().print(f"{rec.ref} -> {path}")
