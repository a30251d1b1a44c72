"""`protege teacher replay`: an offline OpenAI-compatible teacher."""

from __future__ import annotations

import click

from protege.cli.common import UserError, db_option, open_store_or_fail


@click.group()
def teacher() -> None:
    """Offline teachers for runs and tests without a real LLM."""


@teacher.command("replay")
@click.option("--from", "source", required=True, help="store | bfcl:CATEGORY[,CATEGORY] | FILE.jsonl")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
@click.option("--limit", type=int, default=None, help="First N BFCL entries per category.")
@db_option
def replay(source: str, host: str, port: int, limit: int | None, db_url: str | None) -> None:
    """Answer chat completions from recorded traces or BFCL ground truth."""
    import uvicorn

    from protege.teacher.replay import ReplayIndex, create_replay_app

    store = open_store_or_fail(db_url) if source == "store" else None
    try:
        index = ReplayIndex.from_source(source, store=store, limit=limit)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not len(index):
        raise UserError(f"no recorded answers in {source}")
    click.echo(f"replay teacher: {len(index)} answers from {source} on http://{host}:{port}/v1", err=True)
    uvicorn.run(create_replay_app(index), host=host, port=port, log_level="warning")
