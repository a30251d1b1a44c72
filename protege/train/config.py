"""Training configuration: every knob with its reason, defaults fast on a small CPU."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Every linear layer of a Llama/Qwen/Gemma-style block: LoRA on all of them
# learns a new output format markedly faster than attention-only LoRA.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(kw_only=True)
class TrainConfig:
    """LoRA SFT of a student on its task's teacher answers."""

    base: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Base model: a catalog name or a hub id (see `protege models list`)"},
    )
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training split"})
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (overrides epochs)"}
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"help": "Stop after about this many training tokens (a compute budget that treats short "
                  "single calls and long packed conversations alike; caps epochs and max_steps)"},
    )
    max_seconds: float | None = field(
        default=None,
        metadata={"help": "Wall-clock budget for the optimizer steps: after the first steps are timed the "
                  "schedule is shortened to end within it, learning-rate decay included (validation and "
                  "checkpoints not counted)"},
    )
    lr: float = field(
        default=1e-3,
        metadata={
            "help": "Peak learning rate (linear warm-up then linear decay). LoRA on a 135M model "
            "tolerates a high rate; it reaches a given validation loss in far fewer steps"
        },
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of steps spent warming up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay on LoRA weights"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)"})
    batch_size: int = field(default=8, metadata={"help": "Examples per optimizer step"})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches accumulated per optimizer step"})
    max_length: int = field(
        default=2048, metadata={"help": "Longest example in tokens; longer ones are skipped, not cut"}
    )
    pack_turns: bool = field(
        default=True,
        metadata={
            "help": "Train each agent conversation once: an earlier call whose prompt and answer begin a "
            "later call's prompt is supervised inside that later example instead of on its own"
        },
    )
    decision_weight: float = field(
        default=1.0,
        metadata={
            "help": "Loss weight of the tokens that decide an answer (the choice of a call or text, and the "
            "first call's name) against 1 for its other tokens: a call's braces and a closing text's words "
            "are most of its tokens but seldom where a student goes wrong"
        },
    )
    rank: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: 2 x rank)"})
    dropout: float = field(
        default=0.0,
        metadata={"help": "LoRA dropout; off by default: short runs on one task gain nothing from it"},
    )
    layers: str = field(
        default="top8",
        metadata={
            "help": "Which transformer blocks get LoRA: 'all', 'topN' (the last N) or a comma list. "
            "top8 of SmolLM2's 30 blocks halves backward cost (no gradient flows below the lowest "
            "adapted block) for a small loss in quality on narrow tasks"
        },
    )
    target_modules: tuple[str, ...] = field(
        default=DEFAULT_TARGETS, metadata={"help": "Linear layers that get LoRA inside each chosen block"}
    )
    drop_prefix: bool | None = field(
        default=None,
        metadata={
            "help": "Remove the task's static prefix (system prompt, shared tools) from the student's "
            "prompt; default: on when the dataset manifest has one"
        },
    )
    precision: str = field(
        default="auto",
        metadata={"help": "'auto' (bf16 where the hardware has it, else fp32), 'bf16' or 'fp32'"},
    )
    quantization: str = field(
        default="none",
        metadata={"help": "'4bit' for QLoRA (CUDA + bitsandbytes only), else 'none'"},
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations in backward; default: on for CUDA only"}
    )
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda' or 'cuda:N'"})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch (default: the cores not busy with other work)"}
    )
    eval_every: int = field(
        default=0, metadata={"help": "Validate every N steps (0: about 8 times per run, and at the end)"}
    )
    max_eval_examples: int = field(
        default=128, metadata={"help": "Validation examples scored at each evaluation (a fixed sample)"}
    )
    patience: int = field(
        default=3,
        metadata={"help": "Early stopping: evaluations without improvement before stopping (0: off)"},
    )
    min_delta: float = field(
        default=1e-3, metadata={"help": "Smallest validation-loss drop counted as improvement"}
    )
    checkpoint_every: int = field(
        default=0, metadata={"help": "Save a resumable checkpoint every N steps (0: at each evaluation)"}
    )
    seed: int = field(default=0, metadata={"help": "Seed for LoRA init, batch order and dropout"})

    def resolved_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "target_modules" in kwargs:
            kwargs["target_modules"] = tuple(kwargs["target_modules"])
        return cls(**kwargs)

    def validate(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch size and gradient accumulation must be >= 1")
        if self.rank < 1:
            raise ValueError("LoRA rank must be >= 1")
        if self.decision_weight <= 0:
            raise ValueError(f"decision weight must be > 0, not {self.decision_weight}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max tokens must be >= 1, not {self.max_tokens}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max seconds must be > 0, not {self.max_seconds}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"unknown precision {self.precision!r} (auto, bf16, fp32)")
        if self.quantization not in ("none", "4bit"):
            raise ValueError(f"unknown quantization {self.quantization!r} (none, 4bit)")
        parse_layers(self.layers, 1000)


def parse_layers(spec: str, n_layers: int) -> list[int] | None:
    """'all' -> None (every block); 'top8' -> the last 8; '0,5,9' -> those."""
    spec = (spec or "all").strip().lower()
    if spec == "all":
        return None
    if spec.startswith("top"):
        try:
            n = int(spec[3:])
        except ValueError:
            raise ValueError(f"bad --layers {spec!r} (use all, topN or a comma list)") from None
        if n < 1:
            raise ValueError("--layers topN needs N >= 1")
        return list(range(max(0, n_layers - n), n_layers))
    try:
        idx = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"bad --layers {spec!r} (use all, topN or a comma list)") from None
    if not idx or idx[0] < 0 or idx[-1] >= n_layers:
        raise ValueError(f"--layers {spec!r} out of range for {n_layers} blocks")
    return idx
