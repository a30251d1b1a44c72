"""``protege models list|show`` (the catalog) and ``protege select TASK``."""

from __future__ import annotations

from typing import Any

import click

from protege.cli.common import UserError, console, db_option, json_option, open_store_or_fail, print_json


def _catalog() -> Any:
    from protege.models.catalog import CatalogError, load_catalog

    try:
        return load_catalog()
    except CatalogError as exc:
        raise UserError(str(exc)) from None


def _ctx(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


@click.group()
def models() -> None:
    """The catalog of candidate small models. Add your own in PROTEGE_HOME/catalog.json."""


@models.command("list")
@click.option("--offline", is_flag=True, help="Only models usable without a download.")
@json_option
def list_(offline: bool, as_json: bool) -> None:
    """Every catalog model; marks the ones usable here without a download."""
    from protege.models.catalog import human_params
    from protege.models.loader import availability

    rows = []
    for spec in _catalog():
        where = availability(spec)
        if offline and not where:
            continue
        rows.append((spec, where))
    if as_json:
        print_json([{**spec.to_dict(), "available": where} for spec, where in rows])
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} model(s); offline: usable without a download")
    for col, kw in (
        ("name", {"no_wrap": True}), ("params", {"justify": "right"}), ("context", {"justify": "right"}), ("licence", {}),
        ("tool calls", {}), ("bf16 GB", {"justify": "right"}), ("4-bit GB", {"justify": "right"}),
        ("offline", {"no_wrap": True}),
    ):
        table.add_column(col, **kw)
    for spec, where in rows:
        table.add_row(
            spec.name + (" *" if spec.user else ""), human_params(spec.parameters), _ctx(spec.context_window),
            spec.licence, spec.tool_call_format, f"{spec.memory('bf16'):.1f}", f"{spec.memory('4bit'):.1f}",
            f"[green]{where}[/]" if where else "-",
        )
    c = console()
    c.print(table)
    if any(spec.user for spec, _ in rows):
        c.print("* from your catalog (PROTEGE_HOME/catalog.json)")


@models.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """One catalog entry (by name or hub id)."""
    from protege.models.loader import availability, cache_path

    spec = _catalog().find(name)
    if spec is None:
        raise UserError(f"unknown model {name!r}: see `protege models list`")
    data = {**spec.to_dict(), "available": availability(spec), "cache": str(cache_path(spec.name))}
    if as_json:
        print_json(data)
        return
    c = console()
    c.print(f"[bold]{spec.name}[/]  ({spec.hub_id})")
    for key, value in data.items():
        if key in ("name", "hub_id") or value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        c.print(f"  {key:<22} {value}")


def _licences(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(x.strip() for x in text.split(",") if x.strip())


@click.command()
@click.argument("task_id")
@click.option("--max-params", metavar="N", help="Largest model to consider, e.g. 500M, 1B.")
@click.option("--licence", "--license", "licence", metavar="LIST", help="Allowed licences, e.g. apache-2.0,mit.")
@click.option("--memory-gb", type=float, help="Inference memory budget in GB.")
@click.option("--precision", type=click.Choice(["bf16", "4bit"]), default="bf16", show_default=True,
              help="Precision the memory budget assumes.")
@click.option("--machine", is_flag=True,
              help="Only models that fit this machine: its GPU memory, else its RAM (measured here).")
@click.option("--gpu-memory-gb", type=click.FloatRange(min=0), help="GPU memory of the serving machine, in GB.")
@click.option("--cpu-ram-gb", type=click.FloatRange(min=0), help="RAM of the serving machine, in GB.")
@click.option("--sample", type=int, default=20, show_default=True, help="Validation rows per candidate and mode.")
@click.option("--shots", type=int, default=3, show_default=True, help="Examples in the few-shot prompt (0: zero-shot only).")
@click.option("--model", "only", multiple=True, help="Only this catalog model (repeatable).")
@click.option("--include-hub", is_flag=True, help="Also try models that need a hub download.")
@click.option("--dataset-version", help="Dataset version (default: latest).")
@click.option("--seed", type=int, default=0, show_default=True)
@db_option
@json_option
def select(
    task_id: str, max_params: str | None, licence: str | None, memory_gb: float | None, precision: str,
    machine: bool, gpu_memory_gb: float | None, cpu_ram_gb: float | None, sample: int, shots: int, only: tuple[str, ...], include_hub: bool, dataset_version: str | None, seed: int,
    db_url: str | None, as_json: bool,
) -> None:
    """Try candidate models on TASK_ID zero-shot and few-shot and rank them."""
    from protege.models.catalog import Constraints, human_params, parse_params
    from protege.models.select import MODES, SelectConfig, select_models

    try:
        cons = Constraints(
            max_params=parse_params(max_params) if max_params else None,
            licences=_licences(licence), memory_gb=memory_gb, precision=precision,
            gpu_memory_gb=gpu_memory_gb, cpu_ram_gb=cpu_ram_gb,
        )
        if machine:
            cons = cons.with_machine(gpu_memory_gb=gpu_memory_gb, cpu_ram_gb=cpu_ram_gb)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if sample < 1:
        raise UserError("--sample must be at least 1")
    cfg = SelectConfig(
        sample=sample, shots=shots, modes=MODES if shots > 0 else ("zero-shot",), seed=seed,
        include_hub=include_hub, models=only or None,
    )
    store = open_store_or_fail(db_url)
    try:
        from protege.datasets import load_dataset

        dataset = load_dataset(task_id, dataset_version)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console(), transient=True, disable=as_json,
    ) as bar:
        tasks: dict[tuple[str, str], Any] = {}

        def progress(model: str, mode: str, done: int, total: int) -> None:
            key = (model, mode)
            if key not in tasks:
                tasks[key] = bar.add_task(f"{model} {mode}", total=total)
            bar.update(tasks[key], completed=done)

        try:
            sel = select_models(store, task_id, cons, config=cfg, dataset=dataset, progress=progress)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if as_json:
        print_json(sel.to_dict())
        return
    from rich.table import Table

    c = console()
    metric = next((r.primary_metric for r in sel if r.primary_metric), "quality")
    table = Table(title=f"{task_id}: {len(sel)} run(s) on {sample} validation rows; quality = {metric}")
    for col in ("#", "model", "params", "mode", "quality", "name acc", "parse", "ms/call", "tok/s", "weights MB",
                "RSS MB", "note"):
        table.add_column(col, justify="left" if col in ("model", "mode", "note") else "right",
                         no_wrap=col == "model")
    for r in sel:
        m = r.metrics
        table.add_row(
            str(r.rank), r.model, human_params(r.parameters), r.mode,
            f"{r.quality:.3f}" if r.error is None else "-",
            f"{m['tool_name_accuracy']:.3f}" if "tool_name_accuracy" in m else "-",
            f"{m['parse_rate']:.2f}" if "parse_rate" in m else "-",
            f"{r.latency_ms:.0f}", f"{r.tokens_per_s:.1f}", f"{r.param_mb:.0f}", f"{r.rss_mb:.0f}",
            r.error or (f"{r.over_context} over context" if r.over_context else ""),
        )
    c.print(table)
    if sel.best:
        c.print(f"best: [bold]{sel.best.model}[/] ({sel.best.mode}); train it with `protege train {task_id} --base {sel.best.model}`")
    if sel.rejected:
        c.print("rejected by constraints: " + "; ".join(f"{k} ({', '.join(v)})" for k, v in sel.rejected.items()))
    if sel.unavailable:
        c.print(f"[dim]not available offline (use --include-hub where the hub is reachable): {', '.join(sel.unavailable)}[/]")
