"""`protege simulate bfcl`: an agent workload through the gateway."""

from __future__ import annotations

import click

from protege.cli.common import UserError, console, json_option, print_json


@click.group()
def simulate() -> None:
    """Drive agent workloads through an OpenAI-compatible endpoint (the gateway)."""


@simulate.command("bfcl")
@click.argument("categories", nargs=-1, required=True)
@click.option("--base-url", default="http://127.0.0.1:8000/v1", show_default=True, help="The gateway's /v1 URL.")
@click.option("--api-key", envvar="OPENAI_API_KEY", default="protege-sim", help="Key sent to the endpoint.")
@click.option("--limit", type=int, default=None, help="First N entries per category.")
@click.option("--offset", type=int, default=0, help="Skip the first N entries per category.")
@click.option("--model", default=None, help="Model name the agent asks for.")
@json_option
def bfcl_cmd(categories: tuple[str, ...], base_url: str, api_key: str, limit: int | None, offset: int,
             model: str | None, as_json: bool) -> None:
    """Run BFCL CATEGORIES as an agent would; tool calls run on BFCL's API
    simulators; report task success with BFCL's state and response checks."""
    import openai
    from rich.progress import Progress
    from rich.table import Table

    from protege.importers.bfcl import BfclError
    from protege.simulate.bfcl import SimulateConfig, entries_count, simulate_bfcl

    cfg = SimulateConfig(categories=list(categories), limit=limit, offset=offset)
    if model:
        cfg.model = model
    try:
        total = entries_count(cfg.categories, limit, offset)
    except BfclError as exc:
        raise UserError(str(exc)) from None
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    with Progress(transient=True) as bar:
        job = bar.add_task("simulating", total=total)
        report = simulate_bfcl(client, cfg, progress=lambda r: bar.advance(job))
    data = report.to_dict()
    if as_json:
        print_json(data)
        return
    table = Table("category", "entries", "success", "LLM calls", "errors", title="BFCL agent task success")
    for cat, c in data["by_category"].items():
        table.add_row(cat, str(c["entries"]), f"{c['success_rate']:.1%}", str(c["llm_calls"]), str(c["errors"]))
    console().print(table)
    click.echo(f"overall success {data['success_rate']:.1%}; served by {data['served_by']}; {data['seconds']:.1f}s")
