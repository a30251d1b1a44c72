"""``protege demo``: every stage offline on the packaged defaults."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from protege.cli.common import UserError, friendly_errors


def _suites(text: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(sorted(x.split("+"))) for x in text.split(",") if x)


def _single(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for item in (x for x in text.split(",") if x):
        name, sep, cats = item.partition("=")
        if not sep or not name or not cats:
            raise UserError(f"--single wants NAME=CATEGORY+CATEGORY, got {item!r}")
        out.append((name, tuple(cats.split("+"))))
    return tuple(out)


@click.command()
@click.option("--capture-only", is_flag=True,
              help="The one-minute tour of the capture stage alone (fake teacher, gateway, a scripted agent).")
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="State directory, reused by a second run. Default: .protege-demo (capture tour: "
              "$PROTEGE_HOME/demo).")
@click.option("--fresh", is_flag=True, help="Forget the state of an earlier run first.")
@click.option("--max-tokens", type=int, default=170_000, show_default=True,
              help="Training tokens per student: the budget that sizes each student's steps.")
@click.option("--max-steps", type=int, default=None, help="Training steps per student (default: the token budget).")
@click.option("--train-seconds", type=float, default=420.0, show_default=True,
              help="Wall-clock cap on each student's training (0: none); the token budget binds first on a fast CPU.")
@click.option("--max-tasks", type=int, default=2, show_default=True, help="Students trained.")
@click.option("--base", default="smollm2-135m-instruct", show_default=True, help="Student base model.")
@click.option("--suites", default=None, metavar="SUITES",
              help="The agents: BFCL multi-turn API suites, comma-separated, '+' joining the suites of one agent, "
              "which offers all of their tools and runs every conversation they hold (default "
              "GorillaFileSystem+MathAPI+TwitterAPI+VehicleControlAPI,MessageAPI+TicketAPI+TradingBot+TravelAPI).")
@click.option("--single", default=None, metavar="AGENTS",
              help="Single-call agents, comma-separated NAME=CATEGORY+CATEGORY of BFCL single-turn categories "
              "(default python-tools=simple_python+multiple; e.g. live-tools=live_simple+live_multiple).")
@click.option("--sessions", type=int, default=8, show_default=True, help="Agent sessions of the capture tour.")
@friendly_errors
def demo(capture_only: bool, home: Path | None, fresh: bool, max_tokens: int, max_steps: int | None,
         train_seconds: float, max_tasks: int, base: str, suites: str | None, single: str | None, sessions: int) -> None:
    """Run protege end to end, offline: the replay teacher and the gateway, BFCL
    agent traffic captured, students trained, evaluated and gated, then unseen
    traffic with and without them, with the share they served and what it saved."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if capture_only:
        from protege.demo.capture import run_capture

        if fresh and home and home.exists():
            shutil.rmtree(home)
        summary = run_capture(home, sessions=sessions)
        if summary["traces"] != summary["agent"]["calls"]:
            raise click.ClickException(f"{summary['agent']['calls']} calls but {summary['traces']} traces stored")
        return
    from protege.demo import end_to_end as E

    home = (home or Path.cwd() / ".protege-demo").resolve()
    if fresh and home.exists():
        shutil.rmtree(home)
    E.run_demo(home, max_steps=max_steps, max_tokens=max_tokens, train_seconds=train_seconds or None,
               max_tasks=max_tasks, base=base,
               suites=_suites(suites) if suites else E.SUITES, single=_single(single) if single is not None else E.SINGLE)
