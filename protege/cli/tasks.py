"""``protege tasks``: discover recurring tasks and manage them."""

from __future__ import annotations

from typing import Any

import click

from protege.cli.common import (
    console,
    db_option,
    friendly_errors,
    json_option,
    open_store_or_fail,
    print_json,
)


@click.group()
def tasks() -> None:
    """Discover recurring tasks among captured calls; list, inspect, rename, merge, split."""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


@tasks.command()
@db_option
@json_option
@click.option("--source", type=click.Choice(["auto", "curated", "raw"]), default="auto", show_default=True,
              help="auto: the curated view when it has rows, else raw ok traces.")
@click.option("--k", type=int, default=None, help="Number of tasks among untagged calls (default: automatic).")
@click.option("--max-embed", type=int, default=None, help="Most instructions embedded (speed/quality).")
@click.option("--min-size", type=int, default=3, show_default=True, help="Smaller clusters stay unassigned.")
@click.option("--embedder", default=None, metavar="MODEL",
              help="sentence-transformers model path/id, or 'hashing' (no model; fast, coarser). "
              "Default: the packaged all-MiniLM-L6-v2.")
@friendly_errors
def discover(db_url: str | None, as_json: bool, source: str, k: int | None, max_embed: int | None,
             min_size: int, embedder: str | None) -> None:
    """Cluster traces into tasks and write each trace's task_id."""
    from protege.tasks.discover import DiscoverConfig, discover_tasks
    from protege.tasks.embed import EmbedConfig

    cfg = DiscoverConfig(source=source, min_task_size=min_size)
    if embedder:
        cfg.embed = EmbedConfig(model=embedder)
    cfg.cluster.k = k
    if max_embed is not None:
        cfg.cluster.max_embed = max_embed
    store = open_store_or_fail(db_url)
    if as_json:
        result = discover_tasks(store, cfg)
    else:
        import sys
        import time

        if sys.stdout.isatty():
            with console().status("discovering tasks...") as status:
                result = discover_tasks(store, cfg, progress=lambda m: status.update(m))
        else:  # piped: one line per phase
            t0 = time.perf_counter()
            result = discover_tasks(store, cfg, progress=lambda m: click.echo(
                f"discovering tasks: {m} ({time.perf_counter() - t0:.0f}s)"))
    if as_json:
        print_json({
            "n_traces": result.n_traces, "n_unassigned": result.n_unassigned, "source": result.source,
            "seconds": round(result.seconds, 2), "merges": result.merges,
            "tasks": [{**t.to_dict(), **evidence(t.n_traces)} for t in result.tasks],
        })
        return
    click.echo(f"{len(result.tasks)} tasks from {result.n_traces} {result.source} traces "
               f"({result.n_unassigned} unassigned) in {result.seconds:.1f}s")
    _table(result.tasks)
    if result.merges:
        from rich.table import Table

        merged = Table("what discovery joined, and why")
        for line in result.merges:
            merged.add_row(line)
        console().print(merged)


def evidence(n_traces: int) -> dict[str, int]:
    """How many test calls the task has (at the default test share) against
    the number the gate's bar needs before it can pass at all (a perfect
    student), and how many more calls that takes."""
    import math

    from protege.datasets.build import DatasetConfig
    from protege.evaluate.gate import GateThresholds

    frac = DatasetConfig().test_frac
    need = int(GateThresholds().resolved().min_test_examples or 0)
    have = int(n_traces * frac)
    return {"test_calls": have, "test_calls_needed": need,
            "calls_to_go": max(0, math.ceil(need / frac) - n_traces) if have < need else 0}


def _table(items: list[Any]) -> None:
    from rich.table import Table

    table = Table(caption="test: test calls at the default split / calls the gate's bar needs (a perfect "
                  "student); to go: calls still to capture")
    table.add_column("id", no_wrap=True)
    table.add_column("name", max_width=48, overflow="ellipsis", no_wrap=True)
    for col in ("output", "traces", "traffic", "cost", "score", "tools", "test", "to go"):
        table.add_column(col, no_wrap=True, justify="left" if col == "output" else "right")
    for t in items:
        ev = evidence(t.n_traces)
        table.add_row(t.id, t.display_name, t.output_type, str(t.n_traces), _pct(t.traffic_share),
                      _pct(t.cost_share), f"{t.specialisation_score:.2f}", str(len(t.tool_set)),
                      f"{ev['test_calls']}/{ev['test_calls_needed']}", str(ev["calls_to_go"]))
    console().print(table)


@tasks.command("list")
@db_option
@json_option
@click.option("--all", "show_all", is_flag=True, help="Include retired, merged and split tasks.")
@friendly_errors
def list_(db_url: str | None, as_json: bool, show_all: bool) -> None:
    """Tasks, busiest first."""
    from protege.tasks.discover import load_tasks

    items = load_tasks(open_store_or_fail(db_url), status=None if show_all else "active")
    if as_json:
        print_json([{**t.to_dict(), **evidence(t.n_traces)} for t in items])
        return
    if not items:
        click.echo("no tasks yet: run `protege tasks discover`")
        return
    _table(items)


@tasks.command()
@click.argument("task")
@db_option
@json_option
@friendly_errors
def show(task: str, db_url: str | None, as_json: bool) -> None:
    """One task: label, output type, tools, traffic and cost, tokens, and why
    it is (not) worth a student."""
    from protege.tasks.label import verdict
    from protege.tasks.manage import find_task

    t = find_task(open_store_or_fail(db_url), task)
    data = t.to_dict()
    data["verdict"] = verdict(t.specialisation_score)
    if as_json:
        print_json(data)
        return
    p = t.score_parts
    ts = t.token_stats
    lines = [
        f"[bold]{t.display_name}[/]  ({t.id}, {t.status})",
        f"label        {t.label}",
        f"output type  {t.output_type}",
        f"tools        {', '.join(t.tool_set) or '-'}",
        f"keywords     {', '.join(t.keywords) or '-'}",
        f"traffic      {t.n_traces} traces, {_pct(t.traffic_share)} of calls, {_pct(t.cost_share)} of cost",
        f"tokens       prompt mean {ts.get('prompt_mean', 0):.0f} / p95 {ts.get('prompt_p95', 0):.0f}; "
        f"completion mean {ts.get('completion_mean', 0):.0f} / p95 {ts.get('completion_p95', 0):.0f}",
        f"call sites   {len(t.fingerprints)} fingerprint(s)" + (f", tags {', '.join(t.tags)}" if t.tags else ""),
        f"score        {t.specialisation_score:.2f}: {data['verdict']}",
        f"  volume       {p.get('volume', 0):.2f} x 0.45  (log scale: 100 traces -> 0, 10k -> 1; the paper's 10k-100k rule)",
        f"  determinism  {p.get('determinism', 0):.2f} x 0.35  ({p.get('determinism_basis', '')})",
        f"  cost         {p.get('cost', 0):.2f} x 0.20  (share of spend, saturating at 20%)",
    ]
    if t.examples:
        lines.append("examples")
        lines.extend(f"  - {e}" for e in t.examples)
    out = console()
    for line in lines:
        out.print(line, highlight=False)


@tasks.command()
@click.argument("task")
@click.argument("name")
@db_option
@json_option
@friendly_errors
def rename(task: str, name: str, db_url: str | None, as_json: bool) -> None:
    """Give a task a name of your own."""
    from protege.tasks.manage import rename_task

    t = rename_task(open_store_or_fail(db_url), task, name)
    print_json(t.to_dict()) if as_json else click.echo(f"{t.id} is now {t.display_name!r}")


@tasks.command()
@click.argument("task_refs", nargs=-1, required=True, metavar="ID ID...")
@db_option
@json_option
@friendly_errors
def merge(task_refs: tuple[str, ...], db_url: str | None, as_json: bool) -> None:
    """Merge tasks into the first one given."""
    from protege.tasks.manage import merge_tasks

    t = merge_tasks(open_store_or_fail(db_url), list(task_refs))
    print_json(t.to_dict()) if as_json else click.echo(f"merged into {t.id}: {t.n_traces} traces")


@tasks.command()
@click.argument("task")
@click.option("--k", type=int, default=None, help="Number of parts (default: chosen by silhouette).")
@db_option
@json_option
@friendly_errors
def split(task: str, k: int | None, db_url: str | None, as_json: bool) -> None:
    """Re-cluster one task into several."""
    from protege.tasks.manage import split_task

    if k is not None and k < 2:
        raise click.BadParameter("--k must be at least 2")
    parts = split_task(open_store_or_fail(db_url), task, k=k)
    if as_json:
        print_json([p.to_dict() for p in parts])
        return
    click.echo(f"split into {len(parts)} tasks")
    _table(parts)


@tasks.command()
@db_option
@json_option
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Least instruction similarity to a task centroid to join it.")
@friendly_errors
def assign(db_url: str | None, as_json: bool, threshold: float) -> None:
    """Assign traces that have no task yet to known tasks (no re-clustering)."""
    from protege.tasks.index import assign_unassigned

    counts = assign_unassigned(open_store_or_fail(db_url), threshold=threshold)
    print_json(counts) if as_json else click.echo(
        f"{counts['assigned']} assigned, {counts['unassigned']} left unassigned")
