"""``protege import``: bring real workloads in as traces."""

from __future__ import annotations

from pathlib import Path

import click

from protege.cli.common import UserError, console, db_option, json_option, open_store_or_fail, print_json


@click.group("import")
def import_() -> None:
    """Import real workloads (BFCL) as traces."""


@import_.command("bfcl")
@click.argument("categories", nargs=-1, required=True, metavar="CATEGORY...")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="First N entries per category.")
@click.option("--model", default=None, help="Teacher model named in the traces (default gpt-4o).")
@click.option(
    "--system-prompt",
    default=None,
    metavar="TEXT|@FILE",
    help="System prompt of the simulated agent (@path reads it from a file).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the latency estimates.")
@db_option
@json_option
def bfcl(
    categories: tuple[str, ...],
    limit: int | None,
    model: str | None,
    system_prompt: str | None,
    seed: int,
    db_url: str | None,
    as_json: bool,
) -> None:
    """Import Berkeley Function Calling Leaderboard CATEGORY... (e.g. simple_python
    multiple parallel irrelevance multi_turn_base, or a group: all, live,
    multi_turn) as the traces an agent would have logged. Importing twice adds
    nothing new."""
    from protege.importers import bfcl as mod

    try:
        cats = mod.resolve_categories(categories)
        totals = mod.count_entries(cats, limit)
    except mod.BfclError as exc:
        raise UserError(str(exc)) from None
    if system_prompt and system_prompt.startswith("@"):
        path = Path(system_prompt[1:]).expanduser()
        if not path.is_file():
            raise UserError(f"system prompt file not found: {path}")
        system_prompt = path.read_text(encoding="utf-8").strip()
    kwargs = {
        "limit": limit,
        "seed": seed,
        "model": model or mod.DEFAULT_MODEL,
        "system_prompt": system_prompt or mod.DEFAULT_SYSTEM_PROMPT,
    }
    store = open_store_or_fail(db_url, create=True)
    try:
        if as_json:
            report = mod.import_bfcl(store, cats, **kwargs)
        else:
            from protege.progress import Bar

            done_by: dict[str, int] = {}
            with Bar(f"importing {', '.join(cats)}", sum(totals[c] for c in cats)) as bar:

                def advance(category: str, done: int) -> None:
                    done_by[category] = done
                    bar.update(sum(done_by.values()))

                report = mod.import_bfcl(store, cats, progress=advance, **kwargs)
    finally:
        store.close()
    if as_json:
        print_json(report.to_dict())
        return
    from rich.table import Table

    table = Table(title=f"BFCL import ({report.elapsed_s:.1f} s)")
    for col in ("category", "entries", "traces", "new", "already stored", "skipped"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for cat, c in report.categories.items():
        table.add_row(cat, str(c.entries), str(c.traces), str(c.inserted), str(c.existing), str(c.skipped_entries))
    out = console()
    out.print(table)
    reasons: dict[str, int] = {}
    for s in report.skipped:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    for reason, n in reasons.items():
        out.print(f"skipped {n} entries: {reason}")
