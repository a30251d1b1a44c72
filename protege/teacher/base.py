"""The teacher seam: every stage that asks the large model for an answer
(augmentation, the judge) goes through ``Teacher``, so a test or an offline
run swaps the teacher without touching the stage.

``HttpTeacher`` speaks to any OpenAI-compatible endpoint through the official
SDK; ``ReplayTeacher`` answers from recorded traffic; the in-memory
``protege.testing.FakeTeacher`` stands in for both in tests. The gateway
forwards a client's bytes to the same endpoint (``protege.gateway.teacher_http``):
a drop-in proxy must pass on what it does not parse, so it sits below this seam.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from protege.config import teacher_url

if TYPE_CHECKING:
    from protege.teacher.replay import ReplayIndex


class TeacherError(Exception):
    """The teacher gave no answer (unreachable, refused, nothing recorded)."""


@runtime_checkable
class Teacher(Protocol):
    """A large model answering OpenAI chat-completion requests, as dicts."""

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The ``chat.completion`` for ``request``."""
        ...

    def stream(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects for ``request``, as they come."""
        ...


def message_of(completion: dict[str, Any]) -> dict[str, Any]:
    """The first choice's message of a ``chat.completion`` ({} when there is none)."""
    choices = completion.get("choices") or [{}]
    return dict(choices[0].get("message") or {})


class HttpTeacher:
    """An OpenAI-compatible endpoint through the ``openai`` SDK."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout_s: float = 120.0, max_retries: int = 2, client: Any = None) -> None:
        if client is None:
            import openai

            client = openai.OpenAI(base_url=base_url or "https://api.openai.com/v1",
                                   api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unset",
                                   timeout=timeout_s, max_retries=max_retries)
        self.client = client

    @classmethod
    def from_env(cls) -> HttpTeacher:
        """The gateway's teacher: PROTEGE_TEACHER (default OpenAI) with OPENAI_API_KEY."""
        return cls(teacher_url(), os.environ.get("OPENAI_API_KEY"))

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        import openai

        try:
            resp = self.client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            raise TeacherError(f"the teacher at {self.client.base_url} failed: {exc}") from exc
        return resp.model_dump(exclude_unset=True)

    def stream(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        import openai

        try:
            for chunk in self.client.chat.completions.create(**{**request, "stream": True}):
                yield chunk.model_dump(exclude_unset=True)
        except openai.OpenAIError as exc:
            raise TeacherError(f"the teacher at {self.client.base_url} failed: {exc}") from exc


class ReplayTeacher:
    """Recorded answers (``protege.teacher.replay.ReplayIndex``), offline."""

    def __init__(self, index: ReplayIndex) -> None:
        self.index = index

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        answer, _ = self.index.lookup(request)
        if answer is None:
            raise TeacherError("the replay teacher has no recorded answer for this conversation")
        return copy.deepcopy(answer)

    def stream(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from protege.router.sse import completion_chunks

        yield from completion_chunks(self.complete(request))
