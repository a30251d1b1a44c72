"""``protege scrub`` and ``protege curate``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from protege.cli.common import (
    UserError,
    db_option,
    friendly_errors,
    json_option,
    open_store_or_fail,
    print_json,
)
from protege.safejson import json_loads

if TYPE_CHECKING:
    from protege.curate.pipeline import CurateReport


@click.command()
@click.option("--jsonl", is_flag=True, help="Each line is JSON: scrub every string value in it.")
@click.option("--surrogates", is_flag=True, help="Realistic fake values instead of <KIND_n> placeholders.")
@click.option("--no-ner", is_flag=True, help="Skip spaCy NER (no person names; faster).")
def scrub(jsonl: bool, surrogates: bool, no_ner: bool) -> None:
    """Scrub PII and secrets from stdin: one line out per line in.

    Placeholders are numbered per line (the same value gets the same
    placeholder within a line)."""
    from protege.curate.scrub import Scrubber

    scrubber = Scrubber(surrogates=surrogates, ner=not no_ner)
    out = sys.stdout
    batch: list[tuple[int, str]] = []

    def flush() -> None:
        if not batch:
            return
        if jsonl:
            parsed = []
            for lineno, line in batch:
                if not line.strip():
                    parsed.append((lineno, None))
                    continue
                try:
                    parsed.append((lineno, json_loads(line)))
                except ValueError as exc:
                    raise UserError(f"line {lineno}: not JSON ({exc})") from None
            for _, obj in parsed:
                if obj is None:
                    out.write("\n")
                else:
                    out.write(json.dumps(scrubber.scrub_value(obj), ensure_ascii=False) + "\n")
        else:
            scrubber.prime(line for _, line in batch)
            for _, line in batch:
                out.write(scrubber.scrub_text(line) + "\n")
        out.flush()
        batch.clear()

    # Interactive input is answered line by line; piped input in batches.
    per_batch = 1 if sys.stdin.isatty() else 256
    for lineno, raw in enumerate(sys.stdin, start=1):
        batch.append((lineno, raw.rstrip("\n").rstrip("\r")))
        # Batches let NER run over many lines at once; flush often enough for pipes.
        if len(batch) >= per_batch:
            flush()
    flush()


def _threshold(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise UserError(f"--near-dup-threshold must be in (0, 1], got {value}")
    return value


@click.command()
@db_option
@click.option("--dry-run", is_flag=True, help="Show what would be kept and dropped; write nothing.")
@click.option("--full", is_flag=True, help="Redo every trace, not only those not yet curated.")
@click.option("--feedback-min", type=float, default=None, metavar="X", help="Keep only traces scored >= X.")
@click.option(
    "--feedback-label",
    "feedback_labels",
    multiple=True,
    metavar="LABEL",
    help="Keep only traces with this feedback label (repeatable).",
)
@click.option(
    "--near-dup-threshold",
    type=float,
    default=0.9,
    show_default=True,
    callback=_threshold,
    help="Jaccard similarity at which traces count as near copies.",
)
@click.option("--no-scrub", is_flag=True, help="Keep payloads as captured (no PII scrubbing).")
@click.option("--no-ner", is_flag=True, help="Scrub without spaCy NER (no person names; faster).")
@click.option("--surrogates", is_flag=True, help="Scrub with realistic fake values instead of placeholders.")
@click.option("--no-schema-check", is_flag=True, help="Do not validate tool-call arguments against schemas.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes (0: one per core, at most 2; 1: none). Used from 4000 pending traces.",
)
@json_option
@friendly_errors
def curate(
    db_url: str | None,
    dry_run: bool,
    full: bool,
    feedback_min: float | None,
    feedback_labels: tuple[str, ...],
    near_dup_threshold: float,
    no_scrub: bool,
    no_ner: bool,
    surrogates: bool,
    no_schema_check: bool,
    workers: int,
    as_json: bool,
) -> None:
    """Filter, scrub and dedup traces into the curated view.

    Runs over traces not yet curated (``--full`` redoes all). Every dropped
    trace is counted by reason; raw traces are never modified."""
    from protege.curate.pipeline import CurateConfig
    from protege.curate.pipeline import curate as run_curate

    cfg = CurateConfig(
        dry_run=dry_run,
        full=full,
        scrub=not no_scrub,
        ner=not no_ner,
        surrogates=surrogates,
        feedback_min=feedback_min,
        feedback_labels=feedback_labels,
        near_dup_threshold=near_dup_threshold,
        check_schema=not no_schema_check,
        workers=workers,
    )
    store = open_store_or_fail(db_url)
    try:
        if as_json:
            report = run_curate(store, cfg)
        else:
            from protege.progress import Bar

            with Bar("curating", 0) as bar:

                def advance(done: int, total: int) -> None:
                    if total != bar.total:
                        bar.set_total(total)
                    bar.update(done)

                report = run_curate(store, cfg, progress=advance)
    finally:
        store.close()
    if as_json:
        print_json(report.to_dict())
        return
    _print_report(report)


def _print_report(r: CurateReport) -> None:
    from rich.table import Table

    from protege.cli.common import console

    title = "curate (dry run: nothing written)" if r.dry_run else "curate"
    table = Table(title=title)
    table.add_column("outcome")
    table.add_column("traces", justify="right")
    table.add_column("share", justify="right")
    seen = max(r.seen, 1)
    table.add_row("kept", str(r.kept), f"{r.kept / seen:.1%}")
    for reason, n in r.dropped.items():
        table.add_row(f"dropped: {reason}", str(n), f"{n / seen:.1%}")
    table.add_row("seen", str(r.seen), "", end_section=True)
    c = console()
    c.print(table)
    extra = [f"{r.near_duplicates} kept traces joined a near-duplicate group"]
    if r.scrubbed:
        extra.append("scrubbed: " + ", ".join(f"{k.lower()} {v}" for k, v in r.scrubbed.items()))
    extra.append(f"{r.elapsed_s:.1f}s ({r.cpu_s:.1f}s CPU), {r.traces_per_s:.0f} traces/s")
    for line in extra:
        c.print(line)
