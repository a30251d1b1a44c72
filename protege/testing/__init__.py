"""Fixtures that the demo, the benchmarks and the tests share (and that users
can use in their own tests): an in-memory teacher, an in-process fake
OpenAI-compatible teacher server, a fake vLLM OpenAI server with its
dynamic-LoRA endpoints, and a poll for what they do in the background."""

from __future__ import annotations

from protege.testing.fake_teacher import FakeTeacher
from protege.testing.fake_upstream import FakeUpstreamThread, completion
from protege.testing.fake_vllm import FakeVllmThread
from protege.testing.wait import wait_until

__all__ = ["FakeTeacher", "FakeUpstreamThread", "FakeVllmThread", "completion", "wait_until"]
