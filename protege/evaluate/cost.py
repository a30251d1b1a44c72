"""Cost per 1,000 calls: the teacher from its recorded or list price, the
student from the hardware it runs on and the time each call takes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class CostConfig:
    device_usd_per_hour: float | None = field(
        default=None,
        metadata={
            "help": "what an hour of the student's hardware costs; default: PROTEGE_GPU_USD_PER_HOUR on a "
            "GPU, else PROTEGE_CPU_USD_PER_HOUR, else 2.00 (GPU) / 0.10 (CPU)"
        },
    )
    concurrency: int = field(
        default=1,
        metadata={"help": "calls the student serves at once on that hardware (batching divides the cost)"},
    )


def device_rate(device: str, config: CostConfig | None = None) -> float:
    """$/hour of the student's hardware. Defaults are typical on-demand prices:
    ~$2/h for one datacenter GPU, ~$0.10/h for two vCPUs."""
    config = config or CostConfig()
    if config.device_usd_per_hour is not None:
        return config.device_usd_per_hour
    if device.startswith("cuda"):
        return float(os.environ.get("PROTEGE_GPU_USD_PER_HOUR", "2.0"))
    return float(os.environ.get("PROTEGE_CPU_USD_PER_HOUR", "0.10"))


def student_cost_per_1k(
    seconds_per_call: float | None, device: str, config: CostConfig | None = None
) -> float | None:
    if seconds_per_call is None:
        return None
    config = config or CostConfig()
    return device_rate(device, config) / 3600.0 * seconds_per_call / max(config.concurrency, 1) * 1000.0


def teacher_cost_per_1k(traces: Sequence[Any]) -> tuple[float | None, str]:
    """(USD per 1,000 calls, where the figure came from): the traces' recorded
    ``cost_usd`` where present, else the price table on their token counts."""
    from protege.prices import cost_usd

    costs: list[float] = []
    source = "recorded"
    for t in traces:
        c = getattr(t, "cost_usd", None)
        if c is None:
            model = getattr(t, "upstream_model", None) or getattr(t, "model", None)
            c = cost_usd(model, getattr(t, "prompt_tokens", None), getattr(t, "completion_tokens", None))
            if c is not None:
                source = "price table"
        if c is not None:
            costs.append(float(c))
    if not costs:
        return None, "unknown"
    return sum(costs) / len(costs) * 1000.0, source


def saving(student: float | None, teacher: float | None) -> float | None:
    """Share of the teacher's cost saved by the student (0.9 = 90 % cheaper)."""
    if student is None or not teacher:
        return None
    return 1.0 - student / teacher
