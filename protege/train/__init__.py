"""Training: LoRA fine-tuning of a student on its task's teacher answers."""

from __future__ import annotations

from protege.train.config import TrainConfig
from protege.train.data import TaskData

__all__ = ["TaskData", "TrainConfig", "TrainResult", "train_adapter"]


def __getattr__(name: str):  # the trainer pulls torch; import it only when used
    if name in ("train_adapter", "TrainResult"):
        from protege.train import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
