"""Reassemble a streamed chat completion into one ``chat.completion`` object.

Tool-call deltas carry ``id`` and ``name`` only in their first delta; later
deltas are matched by ``index`` and their ``arguments`` fragments appended.
Several choices (``n``) and parallel tool calls interleave freely.
"""

from __future__ import annotations

from typing import Any

import orjson


class StreamAccumulator:
    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.service_tier: str | None = None
        self.usage: dict[str, Any] | None = None
        self.choices: dict[int, dict[str, Any]] = {}
        self.error: dict[str, Any] | None = None
        self.done = False
        self.chunks = 0

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk and "choices" not in chunk:
            self.error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return
        self.chunks += 1
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.created = self.created or chunk.get("created")
        self.system_fingerprint = chunk.get("system_fingerprint") or self.system_fingerprint
        self.service_tier = chunk.get("service_tier") or self.service_tier
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for ch in chunk.get("choices") or []:
            idx = ch.get("index", 0)
            state = self.choices.setdefault(
                idx,
                {"role": None, "content": None, "refusal": None, "tool_calls": {}, "finish_reason": None, "logprobs": None},
            )
            delta = ch.get("delta") or {}
            if delta.get("role"):
                state["role"] = delta["role"]
            if delta.get("content") is not None:
                state["content"] = (state["content"] or "") + delta["content"]
            if delta.get("refusal") is not None:
                state["refusal"] = (state["refusal"] or "") + delta["refusal"]
            for tc in delta.get("tool_calls") or []:
                ti = tc.get("index", 0)
                slot = state["tool_calls"].setdefault(
                    ti, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                if tc.get("type"):
                    slot["type"] = tc["type"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    slot["function"]["arguments"] += fn["arguments"]
            if ch.get("finish_reason"):
                state["finish_reason"] = ch["finish_reason"]
            if ch.get("logprobs"):
                lp = state["logprobs"] or {"content": []}
                lp["content"] = (lp.get("content") or []) + (ch["logprobs"].get("content") or [])
                state["logprobs"] = lp

    def feed_sse_bytes(self, data: bytes) -> None:
        """Parse a whole SSE body (``data: {...}`` events, ``data: [DONE]``)."""
        if b"\r" in data:  # servers may end lines with CRLF or CR
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        for event in data.split(b"\n\n"):
            payload = b""
            for line in event.split(b"\n"):
                line = line.rstrip(b"\r")
                if line.startswith(b"data:"):
                    payload += line[5:].lstrip()
            if not payload:
                continue
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                self.feed(chunk)

    def result(self) -> dict[str, Any]:
        choices = []
        for idx in sorted(self.choices):
            st = self.choices[idx]
            msg: dict[str, Any] = {"role": st["role"] or "assistant", "content": st["content"]}
            if st["refusal"] is not None:
                msg["refusal"] = st["refusal"]
            if st["tool_calls"]:
                msg["tool_calls"] = [st["tool_calls"][i] for i in sorted(st["tool_calls"])]
            choices.append(
                {"index": idx, "message": msg, "finish_reason": st["finish_reason"], "logprobs": st["logprobs"]}
            )
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.system_fingerprint:
            out["system_fingerprint"] = self.system_fingerprint
        if self.service_tier:
            out["service_tier"] = self.service_tier
        if self.usage:
            out["usage"] = self.usage
        return out
