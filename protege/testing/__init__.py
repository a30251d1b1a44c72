"""Fixtures that the demo, the benchmarks and the tests share (and that users
can use in their own tests): an in-process fake OpenAI-compatible teacher and
a fake vLLM OpenAI server with its dynamic-LoRA endpoints."""

from __future__ import annotations

from protege.testing.fake_upstream import FakeUpstreamThread, completion
from protege.testing.fake_vllm import FakeVllmThread

__all__ = ["FakeUpstreamThread", "FakeVllmThread", "completion"]
