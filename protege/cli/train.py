"""``protege train TASK``: LoRA fine-tune a student on the task's dataset."""

from __future__ import annotations

import os
from typing import Any

import click

from protege.cli.common import (
    UserError,
    config_option,
    console,
    db_option,
    json_option,
    open_store_or_fail,
    print_json,
    renamed_option,
)
from protege.train.config import TrainConfig


def _human_bytes(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _summary(result: Any) -> None:
    from rich.table import Table

    m = result.metrics
    t = Table(title=f"adapter {result.task_id}:{result.version}", show_header=False)
    t.add_column("metric", style="bold")
    t.add_column("value")
    rows = [
        ("directory", str(result.adapter_dir)),
        (
            "stopped",
            f"{m['stop_reason']} at step {m['steps']}/{m['total_steps']} ({m['epochs_done']} epochs)",
        ),
        (
            "best val loss",
            "-" if m["best_val_loss"] is None else f"{m['best_val_loss']:.4f} (step {m['best_step']})",
        ),
        ("final train loss", "-" if m["final_train_loss"] is None else f"{m['final_train_loss']:.4f}"),
        (
            "examples",
            f"{m['train_examples']} train ({m['synthetic_examples']} synthetic), {m['skipped_examples']} skipped",
        ),
        ("tokens / example", f"{m['mean_prompt_tokens']} prompt + {m['mean_answer_tokens']} answer"),
        ("throughput", f"{m['tokens_per_s']:.0f} tok/s, {m['answer_tokens_per_s']:.0f} answer tok/s"),
        ("train time", f"{m['train_time_s']:.1f} s"),
        (
            "peak memory",
            f"RSS {_human_bytes(m['peak_rss_bytes'])}, CUDA {_human_bytes(m['peak_cuda_bytes'])}",
        ),
        (
            "setup",
            ", ".join(
                f"{k}={result.config[k]}"
                for k in ("base", "precision", "device", "rank", "layers", "drop_prefix", "lr", "batch_size")
            ),
        ),
    ]
    if result.record is not None:
        rows.append(
            ("registered", f"{getattr(result.record, 'ref', '')} ({getattr(result.record, 'status', '')})")
        )
    for k, v in rows:
        t.add_row(k, str(v))
    console().print(t)


@click.command("train")
@click.argument("task")
@config_option(TrainConfig, "base", metavar="MODEL")
@click.option("--dataset-version", default=None, metavar="V", help="Dataset version (default: the latest).")
@config_option(TrainConfig, "epochs")
@config_option(TrainConfig, "max_steps")
@config_option(TrainConfig, "max_tokens")
@config_option(TrainConfig, "max_seconds")
@config_option(TrainConfig, "lr")
@config_option(TrainConfig, "rank")
@config_option(TrainConfig, "layers", metavar="top8|all|N,M")
@config_option(TrainConfig, "batch_size")
@config_option(TrainConfig, "decision_weight")
@click.option("--no-drop-prefix", is_flag=True, help="Keep the task's static prefix in the student's prompt.")
@config_option(TrainConfig, "precision", type=click.Choice(["auto", "bf16", "fp32"]))
@config_option(TrainConfig, "device")
@config_option(TrainConfig, "quantization", type=click.Choice(["none", "4bit"]))
@config_option(TrainConfig, "seed")
@config_option(TrainConfig, "threads")
@click.option(
    "--augment-to",
    type=int,
    default=None,
    metavar="N",
    help="Grow a smaller training split to N rows with teacher paraphrases (needs --teacher-url).",
)
@renamed_option(
    "--teacher-url",
    old=("--upstream-url",),
    envvar=["PROTEGE_TEACHER", "PROTEGE_UPSTREAM_URL", "PROTEGE_UPSTREAM"],
    default=None,
    metavar="URL",
    help="OpenAI-compatible base URL of the teacher, for --augment-to.",
)
@renamed_option("--teacher-model", old=("--upstream-model",), default=None, metavar="MODEL",
                help="Teacher model for --augment-to.")
@click.option("--resume", is_flag=True, help="Continue the task's last unfinished run from its checkpoint.")
@click.option("--no-register", is_flag=True, help="Do not record the adapter in the registry.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@db_option
@json_option
def train(
    task: str,
    base: str | None,
    dataset_version: str | None,
    epochs: float | None,
    max_steps: int | None,
    max_tokens: int | None,
    max_seconds: float | None,
    lr: float | None,
    rank: int | None,
    layers: str | None,
    batch_size: int | None,
    decision_weight: float | None,
    no_drop_prefix: bool,
    precision: str | None,
    device: str | None,
    quantization: str | None,
    seed: int | None,
    threads: int | None,
    augment_to: int | None,
    teacher_url: str | None,
    teacher_model: str | None,
    resume: bool,
    no_register: bool,
    quiet: bool,
    db_url: str | None,
    as_json: bool,
) -> None:
    """LoRA fine-tune a student model on TASK's dataset.

    The adapter lands in artifacts/adapters/TASK/N/ with its metrics and is
    registered as a candidate. Ctrl-C saves a checkpoint; --resume carries on.
    """
    from protege.train.config import TrainConfig

    overrides = {
        "base": base,
        "epochs": epochs,
        "max_steps": max_steps,
        "max_tokens": max_tokens,
        "max_seconds": max_seconds,
        "lr": lr,
        "rank": rank,
        "layers": layers,
        "batch_size": batch_size,
        "decision_weight": decision_weight,
        "precision": precision,
        "device": device,
        "quantization": quantization,
        "seed": seed,
        "threads": threads,
    }
    cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    if no_drop_prefix:
        cfg.drop_prefix = False
    try:
        cfg.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None

    augment = teacher = None
    if augment_to:
        if not teacher_url or not teacher_model:
            raise UserError("--augment-to needs --teacher-url and --teacher-model")
        from protege.teacher import HttpTeacher
        from protege.train.augment import AugmentConfig

        augment = AugmentConfig(model=teacher_model, target=augment_to, seed=cfg.seed)
        teacher = HttpTeacher(teacher_url, os.environ.get("OPENAI_API_KEY") or "unused")

    store = None
    if not no_register:
        store = open_store_or_fail(db_url)

    from protege.models.loader import ModelUnavailable
    from protege.train.trainer import TrainingInterrupted, train_adapter

    try:
        result = train_adapter(
            task,
            config=cfg,
            dataset_version=dataset_version,
            resume=resume,
            store=store,
            progress=not quiet and not as_json,
            augment=augment,
            teacher=teacher,
        )
    except TrainingInterrupted as exc:
        raise UserError(str(exc)) from None
    except (ValueError, KeyError, FileNotFoundError, ModelUnavailable) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise UserError(str(msg).splitlines()[0] if msg else type(exc).__name__) from None
    finally:
        if store is not None:
            store.close()

    if as_json:
        print_json(
            {
                "task_id": result.task_id,
                "version": result.version,
                "adapter_dir": str(result.adapter_dir),
                "registered": getattr(result.record, "id", None),
                "stopped_early": result.stopped_early,
                "config": result.config,
                "metrics": {k: v for k, v in result.metrics.items() if not k.endswith("_curve")},
            }
        )
    else:
        _summary(result)
