"""LoRA SFT of a student on its task's teacher answers: a lean loop on PEFT
rather than TRL's ``SFTTrainer`` (only answer positions go through the output
layer, resumption replays the exact batch order and RNG state); docs/models.md
(Training) says why. Several GPUs go through accelerate, QLoRA through
bitsandbytes, both imported only when asked for."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protege.datasets import read_jsonl
from protege.models.loader import cpu_has_bf16
from protege.train.config import TrainConfig, parse_layers
from protege.train.data import (
    TokenizedExample,
    collate,
    length_grouped_batches,
    load_task_dataset,
    pack_turns,
    rows_of,
    tokenize_rows,
)
from protege.train.model import (
    answer_loss_module,
    attach_lora,
    auto_threads,
    load_base_model,
    load_lora_state,
    lora_state,
    n_layers,
    peak_rss_bytes,
    quantized,
    resolve_device,
    resolve_precision,
)
from protege.train.runs import (
    CHECKPOINT,
    METADATA,
    SYNTHETIC,
    new_run_dir,
    register_adapter,
    registry_next_version,
    resumable_run,
    version_number,
)

if TYPE_CHECKING:
    from protege.store.db import TraceStore
    from protege.teacher import Teacher

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Training stopped early (Ctrl-C or a callback); a checkpoint was saved."""

    def __init__(self, message: str, run_dir: Path, step: int) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.step = step


@dataclass
class TrainResult:
    task_id: str
    version: int | str
    adapter_dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    record: Any = None
    stopped_early: bool = False


@dataclass
class TrainState:
    """What a checkpoint needs to carry on exactly where it stopped."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    train_time_s: float = 0.0
    tokens: int = 0
    answer_tokens: int = 0
    padded_tokens: int = 0
    train_curve: list[list[float]] = field(default_factory=list)
    val_curve: list[list[float]] = field(default_factory=list)
    started_at: str = ""


# -- the run ---------------------------------------------------------------------


class _LinearSchedule:
    """Linear warm-up then linear decay to zero at ``total``; ``total`` may be
    shortened mid-run (a time budget) and the decay still reaches zero."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = total, warmup

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))


def budget_steps(step: int, train_time_s: float, total: int, max_seconds: float,
                 pace_s: float | None = None) -> int:
    """The steps that fit ``max_seconds``: those done plus what the time left
    allows at ``pace_s`` a step (default: the mean so far); never more than
    ``total``, never fewer than those done (then the run ends now)."""
    if step <= 0 or train_time_s <= 0:
        return total
    pace = pace_s or train_time_s / step
    return max(step, min(total, step + int(max(0.0, max_seconds - train_time_s) / pace)))


def _eval_sample(n: int, k: int, seed: int) -> list[int]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return sorted(idx[:k]) if k and k < n else idx


def train_adapter(
    task_id: str | None = None,
    *,
    config: TrainConfig | None = None,
    dataset: Any = None,
    dataset_version: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    run_dir: Path | None = None,
    resume: bool = False,
    store: TraceStore = None,
    progress: bool = False,
    on_step: Callable[[TrainState], None] | None = None,
    augment: Any = None,
    teacher: Teacher | None = None,
) -> TrainResult:
    """Train a LoRA adapter for a task and write it under ``artifacts/adapters/<task>/<vN>/``.

    ``dataset`` (anything with ``.manifest``, ``.train``, ``.validation``) and
    ``model``/``tokenizer`` default to the task's latest dataset and the
    configured base model; a passed ``model`` is modified in place (LoRA is
    injected into it). ``resume`` continues the newest unfinished run of the
    task (or ``run_dir``) from its last checkpoint, with its saved config.
    ``on_step`` is called after every optimizer step; raising from it stops
    training with a checkpoint saved. With ``store``, the adapter is
    registered as a candidate. With ``augment`` (an ``AugmentConfig``) and
    a ``teacher`` (``protege.teacher.Teacher``), a small training split is grown with synthetic rows
    (kept in the run directory, so a resumed run trains on the same data).
    """
    import torch

    cfg = copy.deepcopy(config) if config is not None else TrainConfig()
    ckpt: dict[str, Any] | None = None
    if resume:
        if run_dir is None:
            if task_id is None:
                raise ValueError("resume needs a task id or a run directory")
            run_dir = resumable_run(task_id)
            if run_dir is None:
                raise ValueError(f"no unfinished training run of task {task_id!r} to resume")
        if not (run_dir / CHECKPOINT).exists():
            raise ValueError(f"no checkpoint in {run_dir}")
        ckpt = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
        cfg = TrainConfig.from_dict(ckpt["config"])
        dataset_version = dataset_version or ckpt.get("dataset_version")
    cfg.validate()

    if dataset is None:
        if task_id is None:
            raise ValueError("a task id or a dataset is required")
        dataset = load_task_dataset(task_id, dataset_version)
    manifest = dict(getattr(dataset, "manifest", {}) or {})
    task_id = task_id or manifest.get("task_id") or "task"
    train_rows = rows_of(getattr(dataset, "train", None))
    val_rows = rows_of(getattr(dataset, "validation", None))
    if not train_rows:
        raise ValueError(f"task {task_id!r} has no training examples")
    synthetic: list[dict[str, Any]] = []
    if run_dir is not None and (run_dir / SYNTHETIC).exists():
        train_rows = train_rows + rows_of(read_jsonl(run_dir / SYNTHETIC))
    elif augment is not None and teacher is not None and len(train_rows) < augment.target:
        from protege.train.augment import augment_rows

        synthetic = augment_rows(train_rows, teacher, augment)
        train_rows = train_rows + synthetic
    if ckpt and manifest.get("hash") and ckpt.get("dataset_hash") not in (None, manifest.get("hash")):
        raise ValueError("the dataset changed since the checkpoint was written; start a new run")

    prefix = manifest.get("prefix") or None
    has_prefix = bool(prefix and (prefix.get("system") or prefix.get("tools")))
    drop_prefix = has_prefix if cfg.drop_prefix is None else (cfg.drop_prefix and has_prefix)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif not torch.cuda.is_available():
        torch.set_num_threads(auto_threads())
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if precision == "bf16" and device == "cpu" and not cpu_has_bf16():
        log.warning("this CPU has no native bf16; bf16 autocast will be slow")
    use_cuda = device.startswith("cuda")
    if cfg.gradient_checkpointing is None:
        cfg.gradient_checkpointing = use_cuda

    if model is None or tokenizer is None:
        model, tokenizer = load_base_model(cfg)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = int(tokenizer.pad_token_id)

    train_ex, train_rep = tokenize_rows(
        train_rows, tokenizer, prefix=prefix, drop_prefix=drop_prefix, max_length=cfg.max_length
    )
    val_all, _ = tokenize_rows(
        val_rows, tokenizer, prefix=prefix, drop_prefix=drop_prefix, max_length=cfg.max_length
    )
    if not train_ex:
        raise ValueError(f"no training example of task {task_id!r} fits in {cfg.max_length} tokens")
    answers_total = len(train_ex)
    folded = 0
    if cfg.pack_turns:
        train_ex, folded = pack_turns(train_ex)
    val_ex = [val_all[i] for i in _eval_sample(len(val_all), cfg.max_eval_examples, cfg.seed)]

    # -- model
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = None
    if world > 1:
        from accelerate import Accelerator

        # Without CUDA the processes meet over gloo (accelerate would otherwise
        # take each one for a single-process run and train every shard on every rank).
        accelerator = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no",
                                  cpu=not use_cuda)
        device = str(accelerator.device)
    if cfg.quantization == "4bit":
        model = quantized(model, cfg, device)
    elif use_cuda:
        # frozen base in bf16 halves GPU memory; PEFT keeps the adapter in fp32
        model.to(device, dtype=torch.bfloat16 if precision == "bf16" else None)
    if cfg.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "config"):
        model.config.use_cache = False
    peft_model = attach_lora(model, cfg)
    peft_model.to(device)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in peft_model.parameters())
    loss_mod = answer_loss_module()(peft_model)

    # -- schedule
    lengths = [len(e.input_ids) for e in train_ex]
    steps_per_epoch = math.ceil(len(train_ex) / cfg.batch_size)
    if world > 1:
        steps_per_epoch = math.ceil(steps_per_epoch / world)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_tokens and lengths:
        per_step = statistics.fmean(lengths) * cfg.batch_size * world
        total_steps = max(1, min(total_steps, math.ceil(cfg.max_tokens / per_step)))
    warmup = int(cfg.warmup_ratio * total_steps)
    eval_every = cfg.eval_every or max(1, total_steps // 8)
    ckpt_every = cfg.checkpoint_every or eval_every

    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = _LinearSchedule(total_steps, warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if accelerator is not None:
        loss_mod, optimizer = accelerator.prepare(loss_mod, optimizer)

    state = TrainState(started_at=_now())
    best_lora: dict[str, Any] | None = None
    if ckpt is not None:
        load_lora_state(peft_model, ckpt["lora"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = TrainState(**ckpt["state"])
        best_lora = ckpt.get("best_lora")
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
    # the version directory is claimed only once everything above succeeded
    if run_dir is None and accelerator is not None:
        # One run, one version: the main process claims the directory and tells the others.
        from accelerate.utils import broadcast_object_list

        claimed = [str(new_run_dir(task_id, registry_next_version(store, task_id)))
                   if accelerator.is_main_process else None]
        run_dir = Path(broadcast_object_list(claimed)[0])
    elif run_dir is None:
        run_dir = new_run_dir(task_id, registry_next_version(store, task_id))
    run_dir.mkdir(parents=True, exist_ok=True)
    if synthetic:
        (run_dir / SYNTHETIC).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in synthetic))
    version: int | str = version_number(run_dir.name) or run_dir.name
    is_main = accelerator is None or accelerator.is_main_process

    def amp() -> Any:
        # accelerate autocasts inside the prepared module itself
        if precision == "bf16" and accelerator is None:
            return torch.autocast(device_type="cuda" if use_cuda else "cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def evaluate() -> float | None:
        if not val_ex:
            return None
        peft_model.eval()
        total, count = 0.0, 0
        order = sorted(range(len(val_ex)), key=lambda i: len(val_ex[i].input_ids))
        with torch.no_grad(), amp():
            for j in range(0, len(order), cfg.batch_size):
                batch = collate([val_ex[i] for i in order[j : j + cfg.batch_size]], pad_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                s, c = _unwrap(loss_mod)(**batch)
                total += float(s)
                count += int(c)
        peft_model.train()
        return total / max(1, count)

    def save_checkpoint() -> None:
        if not is_main:
            return
        payload = {
            "lora": lora_state(peft_model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state.__dict__,
            "best_lora": best_lora,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "config": cfg.to_dict(),
            "dataset_hash": manifest.get("hash"),
            "dataset_version": manifest.get("version"),
        }
        tmp = run_dir / (CHECKPOINT + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, run_dir / CHECKPOINT)

    bar = None
    if progress and is_main:
        from protege.progress import Bar

        bar = Bar(f"train {task_id}", total_steps)
        bar.done = state.step
        bar.start()

    peft_model.train()
    stop_reason = "completed"
    cut_by_time = False
    planned_steps = total_steps
    step_times: list[float] = []
    t_mark = time.perf_counter()
    try:
        while state.step < total_steps and stop_reason == "completed":
            batches = length_grouped_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=state.epoch)
            if accelerator is not None:
                batches = batches[accelerator.process_index :: world]
            while (
                state.batch_in_epoch < len(batches)
                and state.step < total_steps
                and stop_reason == "completed"
            ):
                examples = [train_ex[i] for i in batches[state.batch_in_epoch]]
                loss_value = _train_step(
                    examples, cfg, loss_mod, optimizer, scheduler, trainable, amp, accelerator, device, pad_id
                )
                state.batch_in_epoch += 1
                state.step += 1
                state.tokens += sum(len(e.input_ids) for e in examples)
                state.answer_tokens += sum(e.n_answer for e in examples)
                state.padded_tokens += len(examples) * max(len(e.input_ids) for e in examples)
                now = time.perf_counter()
                state.train_time_s += now - t_mark
                state.train_curve.append([state.step, round(loss_value, 5)])
                evaluated = False
                if state.step % eval_every == 0 or state.step == total_steps:
                    evaluated = True
                    val = evaluate()
                    if val is not None:
                        state.val_curve.append([state.step, round(val, 5)])
                        if val < state.best_val - cfg.min_delta:
                            state.best_val, state.best_step, state.bad_evals = val, state.step, 0
                            best_lora = lora_state(peft_model)
                        else:
                            state.bad_evals += 1
                            if cfg.patience and state.bad_evals >= cfg.patience:
                                stop_reason = "early_stopping"
                # The time budget: timed after a few steps (the first are slow:
                # allocation, caches), then again as the pace settles.
                # The pace is that of the last steps, so a slow start (another
                # job on the machine) does not cut the run for good; the
                # schedule may lengthen again, never beyond its planned steps.
                step_times.append(now - t_mark)
                if cfg.max_seconds and state.step >= 3 and (state.step < 10 or state.step % 5 == 0):
                    recent = step_times[-10:]
                    fit = budget_steps(state.step, state.train_time_s, planned_steps, cfg.max_seconds,
                                       pace_s=sum(recent) / len(recent))
                    if fit != total_steps:
                        total_steps = schedule.total = fit
                        schedule.warmup = min(warmup, fit // 10)
                        cut_by_time = fit < planned_steps
                        if bar is not None:
                            bar.set_total(total_steps)
                if bar is not None:
                    tps = state.tokens / max(state.train_time_s, 1e-9)
                    info = f"loss {loss_value:.3f}"
                    if state.val_curve:
                        info += f" val {state.val_curve[-1][1]:.3f}"
                    bar.update(state.step, info=f"{info}  {tps:.0f} tok/s")
                epoch_done = state.batch_in_epoch >= len(batches)
                if epoch_done:
                    state.epoch += 1
                    state.batch_in_epoch = 0
                if (state.step % ckpt_every == 0 or evaluated) and state.step < total_steps:
                    save_checkpoint()
                if on_step is not None:
                    on_step(state)
                t_mark = time.perf_counter()  # validation and checkpoints are not training time
                if epoch_done:
                    break  # the next epoch has its own batch order
    except BaseException as exc:
        save_checkpoint()
        if bar is not None:
            bar.stop()
        if isinstance(exc, KeyboardInterrupt):
            raise TrainingInterrupted(
                f"training interrupted at step {state.step}/{total_steps}; "
                f"resume with `protege train {task_id} --resume`",
                run_dir,
                state.step,
            ) from None
        raise
    if bar is not None:
        bar.stop()

    # -- the adapter: the best validated weights, else the last
    if best_lora is not None:
        load_lora_state(peft_model, best_lora)
    finished = _now()
    answer_lengths = [n for e in train_ex for n in e.answer_lengths()]
    metrics = {
        "train_loss_curve": state.train_curve,
        "val_loss_curve": state.val_curve,
        "best_val_loss": None if math.isinf(state.best_val) else state.best_val,
        "best_step": state.best_step,
        "final_train_loss": state.train_curve[-1][1] if state.train_curve else None,
        "steps": state.step,
        "total_steps": total_steps,
        "epochs_done": round(state.step / steps_per_epoch, 3),
        "stop_reason": "time_budget" if cut_by_time and stop_reason == "completed" else stop_reason,
        "train_time_s": round(state.train_time_s, 3),
        "tokens": state.tokens,
        "answer_tokens": state.answer_tokens,
        "padded_tokens": state.padded_tokens,
        "tokens_per_s": round(state.tokens / max(state.train_time_s, 1e-9), 2),
        "answer_tokens_per_s": round(state.answer_tokens / max(state.train_time_s, 1e-9), 2),
        "padding_fraction": round(1 - state.tokens / max(1, state.padded_tokens), 4),
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_cuda_bytes": int(torch.cuda.max_memory_allocated()) if use_cuda else None,
        "trainable_params": n_trainable,
        "total_params": n_total,
        "train_examples": answers_total,
        "train_sequences": len(train_ex),
        "turns_packed": folded,
        "val_examples_scored": len(val_ex),
        "skipped_examples": train_rep.skipped_too_long + train_rep.skipped_empty,
        "mean_prompt_tokens": round(train_rep.prompt_tokens / max(1, train_rep.kept), 1),
        "mean_answer_tokens": round(train_rep.answer_tokens / max(1, train_rep.kept), 1),
        "synthetic_examples": sum(e.synthetic for e in train_ex),
    }
    resolved = cfg.to_dict()
    resolved.update(
        drop_prefix=drop_prefix,
        precision=precision,
        device=device,
        lora_layers=parse_layers(cfg.layers, n_layers(peft_model.get_base_model())),
        alpha=cfg.resolved_alpha(),
        max_new_tokens=int(max(answer_lengths) * 1.5) + 16,
        world_size=world,
    )
    meta = {
        "format": 1,
        "task_id": task_id,
        "version": version,
        "base_model": cfg.base,
        "tool_call_format": "hermes",
        "dataset": {
            "task_id": manifest.get("task_id", task_id),
            "version": manifest.get("version"),
            "hash": manifest.get("hash"),
            "id": manifest.get("id"),
            "output_type": manifest.get("output_type"),
            "path": str(getattr(dataset, "path", "") or "") or None,
        },
        "prefix": prefix,
        "drop_prefix": drop_prefix,
        "config": resolved,
        "metrics": metrics,
        "status": "candidate",
        "started_at": state.started_at,
        "finished_at": finished,
        "created_at": finished,
    }
    if is_main:
        peft_model.peft_config["default"].base_model_name_or_path = cfg.base
        peft_model.save_pretrained(run_dir, save_embedding_layers=False)
        tokenizer.save_pretrained(run_dir)
        (run_dir / METADATA).write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str))
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    record = register_adapter(store, meta, run_dir) if store is not None and is_main else None
    return TrainResult(
        task_id=task_id,
        version=version,
        adapter_dir=run_dir,
        metrics=metrics,
        config=resolved,
        record=record,
        stopped_early=stop_reason == "early_stopping",
    )


def _train_step(
    examples: list[TokenizedExample],
    cfg: TrainConfig,
    loss_mod: Any,
    optimizer: Any,
    scheduler: Any,
    trainable: list[Any],
    amp: Callable[[], Any],
    accelerator: Any,
    device: str,
    pad_id: int,
) -> float:
    """One optimizer step over ``examples``, split into ``grad_accum`` micro-batches.

    The loss is the mean over every answer token of the step (at its weight,
    ``TrainConfig.decision_weight``), whatever the split: each micro-batch's
    summed loss is divided by the step's total.
    """
    import torch

    n_answer = sum(max(0.0, e.weighted_answer(cfg.decision_weight)) for e in examples) or 1
    micro = math.ceil(len(examples) / cfg.grad_accum)
    total = 0.0
    for j in range(0, len(examples), micro):
        batch = collate(examples[j : j + micro], pad_id, cfg.decision_weight)
        batch = {k: v.to(device) for k, v in batch.items()}
        with amp():
            loss_sum, _ = loss_mod(**batch)
        loss = loss_sum / n_answer
        if accelerator is not None:
            accelerator.backward(loss)
        else:
            loss.backward()
        total += float(loss.detach())
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def _unwrap(module: Any) -> Any:
    return getattr(module, "module", module)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
