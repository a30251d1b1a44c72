"""Fixtures that the demo, the benchmarks and the tests share (and that users
can use in their own tests): an in-memory teacher, an in-process fake
OpenAI-compatible teacher server, a fake vLLM OpenAI server with its
dynamic-LoRA endpoints, and a poll for what they do in the background."""

from __future__ import annotations

import warnings
from typing import Any

from protege.testing.fake_teacher import FakeTeacher
from protege.testing.fake_teacher_server import FakeTeacherServerThread, completion
from protege.testing.fake_vllm import FakeVllmThread
from protege.testing.wait import wait_until

__all__ = ["FakeTeacher", "FakeTeacherServerThread", "FakeVllmThread", "completion", "wait_until"]


def __getattr__(name: str) -> Any:
    # The former name of the fake teacher server, for tests written against it.
    if name == "FakeUpstreamThread":
        warnings.warn("protege.testing.FakeUpstreamThread is now FakeTeacherServerThread", DeprecationWarning,
                      stacklevel=2)
        return FakeTeacherServerThread
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
