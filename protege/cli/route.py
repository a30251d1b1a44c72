"""`protege route`: rollout mode per task, changed at run time."""

from __future__ import annotations

import datetime as dt

import click

from protege.cli.common import UserError, console, db_option, json_option, open_store_or_fail, print_json


@click.group()
def route() -> None:
    """Rollout per task: off, shadow, canary:PCT, live. Gateways pick changes up within seconds."""


@route.command("set")
@click.argument("task_id")
@click.option("--mode", required=True, help="off | shadow | canary:PCT | live")
@click.option("--reason", default=None, help="Why (kept in the route history).")
@db_option
def set_cmd(task_id: str, mode: str, reason: str | None, db_url: str | None) -> None:
    """Set TASK_ID's rollout mode."""
    from protege.router.routes import set_route

    store = open_store_or_fail(db_url)
    try:
        r = set_route(store, task_id, mode, reason=reason or "cli")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{task_id}: {r.label}")


@route.command("list")
@db_option
@json_option
def list_cmd(db_url: str | None, as_json: bool) -> None:
    """Every task's rollout mode."""
    from rich.table import Table

    from protege.router.routes import list_routes
    from protege.tasks.discover import task_names

    store = open_store_or_fail(db_url)
    rows = list_routes(store)
    names = task_names(store)
    if as_json:
        print_json([{"task_id": r.task_id, "task": names.get(r.task_id), "mode": r.label, "reason": r.reason, "updated_at": r.updated_at} for r in rows])
        return
    table = Table("task", "name", "mode", "reason", "since")
    for r in rows:
        since = dt.datetime.fromtimestamp(r.updated_at).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(r.task_id, names.get(r.task_id, ""), r.label, r.reason or "", since)
    console().print(table if rows else "no routes set: every task is served by the teacher")


@route.command("history")
@click.argument("task_id")
@db_option
@json_option
def history_cmd(task_id: str, db_url: str | None, as_json: bool) -> None:
    """Every change of TASK_ID's mode."""
    from protege.router.routes import route_history

    rows = route_history(open_store_or_fail(db_url), task_id)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        at = dt.datetime.fromtimestamp(r["at"]).strftime("%Y-%m-%d %H:%M:%S")
        mode = f"canary:{r['canary_pct']:g}" if r["mode"] == "canary" else r["mode"]
        click.echo(f"{at}  {mode:12s} {r['reason'] or ''}")
