"""Student engines: embedded (transformers + PEFT) and OpenAI-compatible servers (vLLM)."""

from __future__ import annotations

from protege.engines.engine import (
    BASE,
    AdapterSpec,
    EmbeddedEngine,
    OpenAICompatEngine,
    StudentAnswer,
    StudentEngine,
)

__all__ = ["BASE", "AdapterSpec", "EmbeddedEngine", "OpenAICompatEngine", "StudentAnswer", "StudentEngine"]
