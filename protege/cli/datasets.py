"""``protege dataset``: per-task train/validation/test datasets."""

from __future__ import annotations

import click

from protege.cli.common import (
    console,
    db_option,
    friendly_errors,
    json_option,
    open_store_or_fail,
    print_json,
)


@click.group("dataset")
def dataset() -> None:
    """Build per-task train/validation/test datasets."""


def _fmt_counts(counts: dict[str, int]) -> str:
    return " / ".join(str(counts.get(s, 0)) for s in ("train", "validation", "test"))


@dataset.command("build")
@click.argument("task_id", metavar="TASK")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--test-frac", type=float, default=0.2, show_default=True, help="Share of rows for test.")
@click.option("--val-frac", type=float, default=0.1, show_default=True, help="Share of rows for validation.")
@click.option("--max-examples", type=int, default=None, help="Keep at most N rows (whole sessions).")
@click.option(
    "--source",
    type=click.Choice(["auto", "curated", "raw"]),
    default="auto",
    show_default=True,
    help="Curated view, raw ok traces, or curated when it has rows.",
)
@db_option
@json_option
@friendly_errors
def build(
    task_id: str,
    seed: int,
    test_frac: float,
    val_frac: float,
    max_examples: int | None,
    source: str,
    db_url: str | None,
    as_json: bool,
) -> None:
    """Build TASK's dataset from its traces (reuses the last version when nothing changed)."""
    from protege.datasets import DatasetConfig, build_dataset

    cfg = DatasetConfig(seed=seed, test_frac=test_frac, val_frac=val_frac, max_examples=max_examples, source=source)
    store = open_store_or_fail(db_url)
    try:
        ds = build_dataset(store, task_id, cfg)
    finally:
        store.close()
    m = ds.manifest
    if m.get("source") == "raw":
        click.echo(
            f"protege: warning: task {task_id!r} has no curated traces; built from raw traces "
            "(run `protege curate` first)",
            err=True,
        )
    if as_json:
        print_json({**m, "path": str(ds.path), "reused": ds.reused})
        return
    out = console()
    verb = "unchanged, reusing" if ds.reused else "built"
    out.print(f"{verb} dataset [bold]{task_id} {m['version']}[/bold] ({m['output_type']}) at {ds.path}")
    out.print(f"  train / validation / test: {_fmt_counts(m['counts'])}   hash {m['hash'][:12]}")
    prefix = m.get("prefix") or {}
    n_tools = len(prefix.get("tools") or [])
    out.print(
        f"  static prefix: system prompt {'yes' if prefix.get('system') else 'no'}, "
        f"{n_tools} shared tool schema(s), ~{100 * m.get('prefix_share', 0):.0f}% of the prompt"
    )


@dataset.command("list")
@click.argument("task_id", metavar="[TASK]", required=False)
@db_option
@json_option
@friendly_errors
def list_(task_id: str | None, db_url: str | None, as_json: bool) -> None:
    """Built dataset versions, newest first."""
    from protege.datasets import list_datasets

    store = open_store_or_fail(db_url)
    try:
        rows = list_datasets(store, task_id)
    finally:
        store.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no datasets yet: run `protege dataset build TASK`")
        return
    import datetime as dt

    from rich.table import Table

    table = Table()
    for col in ("task", "version", "type", "train / val / test", "hash", "created"):
        table.add_column(col)
    for r in rows:
        created = dt.datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            r["task_id"], r["version"], r["output_type"] or "", _fmt_counts(r["counts"]), r["hash"][:12], created
        )
    console().print(table)


@dataset.command("show")
@click.argument("task_id", metavar="TASK")
@click.option("--version", "version", default=None, help="v1, v2, ... (default: latest).")
@click.option("--rows", "n_rows", type=int, default=1, show_default=True, help="Example rows to print.")
@json_option
@friendly_errors
def show(task_id: str, version: str | None, n_rows: int, as_json: bool) -> None:
    """A dataset's manifest and a few rows."""
    from protege.datasets import load_dataset

    ds = load_dataset(task_id, version)
    if as_json:
        print_json({**ds.manifest, "path": str(ds.path), "examples": ds.train[: max(0, n_rows)]})
        return
    m = ds.manifest
    out = console()
    out.print(f"[bold]{task_id} {m['version']}[/bold]  {m['output_type']}  source={m.get('source')}  {ds.path}")
    out.print(f"hash {m['hash']}")
    out.print(f"train / validation / test: {_fmt_counts(m['counts'])}   seed {m.get('seed')}")
    prefix = m.get("prefix") or {}
    system = prefix.get("system")
    out.print(f"static system prompt: {system[:200] + ('...' if len(system) > 200 else '') if system else 'none'}")
    tools = prefix.get("tools") or []
    out.print(f"static tools: {', '.join(t['function']['name'] for t in tools) if tools else 'none'}")
    from rich.table import Table

    strata = m.get("strata") or {}
    names = sorted({k for s in strata.values() for k in s})
    if names:
        table = Table(title="rows per stratum")
        for col in ("stratum", "train", "validation", "test"):
            table.add_column(col, justify="left" if col == "stratum" else "right")
        for k in names[:30]:
            table.add_row(k, *(str(strata.get(s, {}).get(k, 0)) for s in ("train", "validation", "test")))
        out.print(table)
        if len(names) > 30:
            out.print(f"... and {len(names) - 30} more strata")
    for row in ds.train[: max(0, n_rows)]:
        import json

        out.print_json(json.dumps(row["completion"]))
