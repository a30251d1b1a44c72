"""Fixtures that the demo, the benchmarks and the tests share (and that users
can use in their own tests): an in-memory teacher, an in-process fake
OpenAI-compatible teacher server and a fake vLLM OpenAI server with its
dynamic-LoRA endpoints."""

from __future__ import annotations

from protege.testing.fake_teacher import FakeTeacher
from protege.testing.fake_upstream import FakeUpstreamThread, completion
from protege.testing.fake_vllm import FakeVllmThread

__all__ = ["FakeTeacher", "FakeUpstreamThread", "FakeVllmThread", "completion"]
