"""Cost of a call in USD, from the maintained ``genai-prices`` table, with
per-model overrides (``PROTEGE_PRICES``: a JSON file mapping model name to
``{"input": $/Mtok, "output": $/Mtok}``) for self-hosted or private models."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _overrides() -> dict[str, dict[str, float]]:
    path = os.environ.get("PROTEGE_PRICES")
    if not path:
        return {}
    return json.loads(Path(path).read_text())


@functools.lru_cache(maxsize=512)
def _genai_price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - optional table
        return None
    try:
        price = calc_price(Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens), model_ref=model)
    except Exception:  # unknown model: no price rather than a failed capture
        return None
    return float(price.total_price)


def cost_usd(model: str | None, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """USD for one call, or ``None`` when the model has no known price."""
    if not model or prompt_tokens is None:
        return None
    completion_tokens = completion_tokens or 0
    over = _overrides().get(model)
    if over is not None:
        return (prompt_tokens * over.get("input", 0.0) + completion_tokens * over.get("output", 0.0)) / 1e6
    return _genai_price(model, prompt_tokens, completion_tokens)
