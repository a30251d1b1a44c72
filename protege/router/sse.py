"""Send a whole (already validated) completion as proper SSE chunks.

A student's answer is buffered until it passes validation; only then is it
streamed, shaped exactly like a teacher's stream: a role delta, content
deltas, tool-call deltas (``id`` and ``name`` in the first delta of each call,
``arguments`` after, matched by ``index``), a finish chunk, the usage chunk
when ``stream_options.include_usage`` asks for it, then ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

_ARG_PIECE = 48  # argument characters per delta, like a real stream


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def completion_chunks(completion: dict[str, Any], *, include_usage: bool = False) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a whole completion, in stream order."""
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    if completion.get("system_fingerprint"):
        base["system_fingerprint"] = completion["system_fingerprint"]

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        obj = dict(base, choices=choices, **extra)
        if include_usage and "usage" not in extra:
            obj["usage"] = None
        return obj

    for choice in completion.get("choices") or []:
        idx = choice.get("index", 0)
        msg = choice.get("message") or {}
        content = msg.get("content")
        # Teachers open with content "" for text answers and null for tool calls.
        opening = {"role": "assistant", "content": None if content is None else ""}
        yield chunk([{"index": idx, "delta": opening, "finish_reason": None}])
        if content:
            yield chunk([{"index": idx, "delta": {"content": content}, "finish_reason": None}])
        for ti, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function") or {}
            first = {
                "index": ti,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": fn.get("name"), "arguments": ""},
            }
            yield chunk([{"index": idx, "delta": {"tool_calls": [first]}, "finish_reason": None}])
            args = fn.get("arguments") or ""
            for start in range(0, len(args), _ARG_PIECE):
                piece = {"index": ti, "function": {"arguments": args[start : start + _ARG_PIECE]}}
                yield chunk([{"index": idx, "delta": {"tool_calls": [piece]}, "finish_reason": None}])
        yield chunk([{"index": idx, "delta": {}, "finish_reason": choice.get("finish_reason")}])
    if include_usage:
        yield chunk([], usage=completion.get("usage"))


def completion_to_sse(completion: dict[str, Any], *, include_usage: bool = False) -> Iterator[bytes]:
    for obj in completion_chunks(completion, include_usage=include_usage):
        yield _event(obj)
    yield b"data: [DONE]\n\n"
