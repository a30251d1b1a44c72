"""The ``protege`` command. Subcommands load lazily so start-up stays fast."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from protege import __version__

# name -> "module:attribute". One CLI noun per pipeline stage; each lives in
# its own module so stages can grow without touching this file.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("protege.cli.serve_cmd:serve", "Run the OpenAI-compatible gateway."),
    "logs": ("protege.cli.logs:logs", "Captured traces: list, show, stats, import, export, prune."),
    "feedback": ("protege.cli.logs:feedback", "Attach a score or label to a trace or session."),
    "keys": ("protege.cli.keys:keys", "Gateway API keys and the encryption key."),
    "import": ("protege.cli.importers:import_", "Import real workloads (BFCL) as traces."),
    "scrub": ("protege.cli.curate:scrub", "Scrub PII and secrets from text or JSONL on stdin."),
    "curate": ("protege.cli.curate:curate", "Filter, scrub and dedup traces into the curated view."),
    "tasks": ("protege.cli.tasks:tasks", "Discover and manage recurring tasks."),
    "dataset": ("protege.cli.datasets:dataset", "Build per-task train/validation/test datasets."),
    "models": ("protege.cli.models:models", "The catalog of candidate small models."),
    "select": ("protege.cli.models:select", "Try candidate models on a task and rank them."),
    "train": ("protege.cli.train:train", "LoRA fine-tune a student on a task."),
    "adapters": ("protege.cli.registry:adapters", "Trained adapters: list, show, export, promote."),
    "eval": ("protege.cli.evaluate:eval_", "Evaluate a student against baselines and the teacher."),
    "answers": ("protege.cli.evaluate:answers", "An evaluation's answers, the student's misses first."),
    "gate": ("protege.cli.evaluate:gate", "Release gate: may this adapter take traffic?"),
    "report": ("protege.cli.report:report", "HTML and terminal report."),
    "route": ("protege.cli.route:route", "Rollout mode per task: shadow, canary, live, off."),
    "teacher": ("protege.cli.teacher:teacher", "Offline teachers (replay of recorded answers)."),
    "simulate": ("protege.cli.simulate:simulate", "Drive an agent workload through the gateway."),
    "flywheel": ("protege.cli.flywheel:flywheel", "Run the curate-train-evaluate-promote loop."),
    "demo": ("protege.cli.demo:demo", "Every stage offline on the packaged defaults (--capture-only: a minute)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="protege")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """protege: capture an agent's LLM calls, train small models on them,
    and route traffic to them with the large model as a safe fallback."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="protege")


if __name__ == "__main__":
    main()
