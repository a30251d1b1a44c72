"""An in-memory teacher for tests: answers every request with a reply of the
test's choosing and keeps the requests it was asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from protege.router.sse import completion_chunks

Reply = str | dict[str, Any] | Callable[[dict[str, Any]], "str | dict[str, Any]"]


class FakeTeacher:
    """``Teacher`` in memory. ``reply``: a text, an assistant message, or a
    function of the request returning either."""

    def __init__(self, reply: Reply = "ok", *, model: str = "fake-teacher") -> None:
        self.reply = reply
        self.model = model
        self.requests: list[dict[str, Any]] = []

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        out = self.reply(request) if callable(self.reply) else self.reply
        msg = {"role": "assistant", "content": out} if isinstance(out, str) else {"role": "assistant", **out}
        return {"id": f"chatcmpl-fake-{len(self.requests)}", "object": "chat.completion", "model": self.model,
                "choices": [{"index": 0, "message": msg,
                             "finish_reason": "tool_calls" if msg.get("tool_calls") else "stop"}]}

    def stream(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from completion_chunks(self.complete(request))
