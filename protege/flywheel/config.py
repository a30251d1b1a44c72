"""Flywheel settings: which tasks get a student, how much it trains, when it
ships, and what counts as drift. Defaults run offline on a CPU."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from protege.train.config import TrainConfig


def _small_train() -> TrainConfig:
    # Small enough that one task trains in minutes on two CPU cores: short
    # sequences (the task's static prefix is dropped), LoRA on the top blocks.
    return TrainConfig(epochs=2.0, max_length=1024, batch_size=8, layers="top8", patience=2)


@dataclass(kw_only=True)
class FlywheelConfig:
    """One flywheel pass: curate -> tasks -> pick -> dataset -> train -> evaluate -> gate -> shadow -> promote."""

    base: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "base model of new students (catalog name or path); 'auto' takes the best of "
            "`protege select` per task (the embedded gateway engine serves one base: keep it fixed there)"
        },
    )
    curate: bool = field(default=True, metadata={"help": "curate new traces first (protege curate)"})
    curate_ner: bool = field(
        default=True, metadata={"help": "spaCy NER while scrubbing names (slower; off in the demo)"}
    )
    discover: bool = field(
        default=True,
        metadata={
            "help": "run task discovery when the tasks stage is installed; traces it leaves unassigned "
            "are grouped by call-site fingerprint"
        },
    )
    embed_model: str | None = field(
        default=None,
        metadata={"help": "embedding model of task discovery ('hashing': model-free); None: the tasks default"},
    )
    min_task_size: int = field(
        default=3, metadata={"help": "calls a call site needs to become a task (smaller: the long tail)"}
    )
    rediscover_min_calls: int = field(
        default=20, metadata={"help": "calls from call sites no task covers that trigger rediscovery"}
    )
    min_examples: int = field(
        default=100, metadata={"help": "curated examples a task needs before it gets a student"}
    )
    min_score: float = field(
        default=0.0, metadata={"help": "lowest specialisation score (tasks stage) worth a student"}
    )
    max_tasks: int = field(default=3, metadata={"help": "tasks trained per run, best scores first"})
    output_types: tuple[str, ...] = field(
        default=("tool_call", "json", "label", "text"), metadata={"help": "output types worth a student"}
    )
    tasks: tuple[str, ...] = field(default=(), metadata={"help": "only these task ids (empty: all)"})
    max_examples: int | None = field(
        default=400, metadata={"help": "cap on a task's dataset rows (whole sessions kept together)"}
    )
    test_frac: float = field(default=0.2, metadata={"help": "share of a task's dataset held out for the gate"})
    val_frac: float = field(
        default=0.1,
        metadata={"help": "share held out for validation (early stopping, the confidence floor's choice)"},
    )
    retrain_min_new: int = field(
        default=100, metadata={"help": "new examples since the last training that trigger a retrain"}
    )
    retrain_min_new_frac: float = field(
        default=0.5, metadata={"help": "...or this share of what the adapter was trained on"}
    )
    force: bool = field(
        default=False, metadata={"help": "retrain every eligible task, new data or not (the non-incremental loop)"}
    )
    train: TrainConfig = field(default_factory=_small_train, metadata={"help": "training settings"})
    recipes: tuple[dict[str, Any], ...] = field(
        default=(),
        metadata={"help": "recipe search: TrainConfig overrides tried per task (e.g. {'layers': 'top8'}, "
                  "{'rank': 32, 'lr': 2e-3}, {'base': 'gemma-3-270m'}); each trains an adapter, the best on the "
                  "validation split is evaluated and gated, every trial is recorded in the registry"},
    )
    eval_sample: int | None = field(
        default=None, metadata={"help": "evaluate on at most this many test examples (None: all)"}
    )
    eval_baselines: bool = field(
        default=False, metadata={"help": "also score the base model zero/few-shot (slower)"}
    )
    min_share: float = field(default=0.95, metadata={"help": "gate: lower CI bound of student/teacher"})
    min_validity: float = field(default=0.99, metadata={"help": "gate: share of valid student answers"})
    min_test_examples: int | None = field(
        default=None, metadata={"help": "gate: test examples needed (default: rule of three)"}
    )
    max_ci_width: float = field(default=0.20, metadata={"help": "gate: widest acceptable interval"})
    confidence_floor: bool = field(
        default=True,
        metadata={"help": "gate: a student short on the whole task may serve the answers it is sure of"},
    )
    min_coverage: float = field(
        default=0.2, metadata={"help": "gate: share of test answers a confidence floor must still serve"}
    )
    shadow: bool = field(
        default=True,
        metadata={"help": "route a gated adapter in shadow first; off: promote as soon as the gate passes"},
    )
    shadow_min_results: int = field(
        default=30, metadata={"help": "shadow comparisons needed before deciding on promotion"}
    )
    shadow_min_agreement: float = field(
        default=0.95, metadata={"help": "share of shadow answers agreeing with the teacher to promote"}
    )
    promote_mode: str = field(default="live", metadata={"help": "route after promotion: live or canary:PCT"})
    approve: bool = field(
        default=False, metadata={"help": "stop before promotion; a person runs `protege adapters promote`"}
    )
    drift_window_s: float = field(
        default=86400.0, metadata={"help": "recent traffic window the drift checks look at (seconds)"}
    )
    drift_min_traces: int = field(default=30, metadata={"help": "recent traces needed before judging drift"})
    drift_new_fingerprint_share: float = field(
        default=0.2, metadata={"help": "share of recent traffic from fingerprints unseen in training"}
    )
    drift_mix_distance: float = field(
        default=0.3, metadata={"help": "total-variation distance of the fingerprint mix vs training"}
    )
    drift_centroid_distance: float = field(
        default=0.15, metadata={"help": "cosine distance of the input centroid vs training (embeddings on)"}
    )
    drift_embeddings: bool = field(
        default=False, metadata={"help": "compare input embedding centroids (loads the embedding model)"}
    )
    drift_max_fallback_rate: float = field(
        default=0.2, metadata={"help": "live share of student answers that failed validation (fell back)"}
    )
    drift_min_agreement: float = field(
        default=0.85, metadata={"help": "recent shadow agreement below this demotes a promoted student"}
    )
    seed: int = field(default=0, metadata={"help": "seed of datasets and training"})

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = self.train.to_dict()
        d["output_types"] = list(self.output_types)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlywheelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        if isinstance(kw.get("train"), dict):
            kw["train"] = TrainConfig.from_dict(kw["train"])
        for k in ("output_types", "tasks"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def validate(self) -> None:
        from protege.router.routes import parse_mode

        mode, _ = parse_mode(self.promote_mode)
        if mode not in ("live", "canary"):
            raise ValueError(f"promote mode must be live or canary:PCT, not {self.promote_mode!r}")
        if self.min_examples < 1 or self.max_tasks < 0:
            raise ValueError("min-examples must be >= 1 and max-tasks >= 0")
        if not 0 < self.shadow_min_agreement <= 1:
            raise ValueError("shadow agreement threshold must be in (0, 1]")
        self.train.validate()
