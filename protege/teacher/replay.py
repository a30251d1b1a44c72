"""A replay teacher: a local OpenAI-compatible server that answers from
recorded traces or from BFCL ground truth. It is the teacher for offline runs
and tests; a request it has no answer for gets a clear error, never a guess.

Answers are looked up by the exact conversation first, then by its position
(the first user message, the tools offered, which user turn and which step of
the agent loop): an agent whose earlier tool results differ from the
recording (say, after a student's call) still gets the recorded next step.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protege.models.toolcall import content_text as _text
from protege.safejson import json_loads

if TYPE_CHECKING:
    from protege.store.db import TraceStore


def _args(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json_loads(raw)
        except ValueError:
            return raw
    return raw


def _tool_names(request: dict[str, Any]) -> list[str]:
    return sorted((t.get("function") or {}).get("name", "") for t in request.get("tools") or [])


def _h(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def exact_key(request: dict[str, Any]) -> str:
    """The conversation as content: tool-call ids and formatting ignored."""
    msgs = []
    for m in request.get("messages") or []:
        entry: dict[str, Any] = {"role": m.get("role"), "content": _text(m.get("content"))}
        if m.get("tool_calls"):
            entry["calls"] = [
                [(c.get("function") or {}).get("name"), _args((c.get("function") or {}).get("arguments"))]
                for c in m["tool_calls"]
            ]
        msgs.append(entry)
    return _h({"m": msgs, "t": _tool_names(request)})


def position_key(request: dict[str, Any]) -> str:
    msgs = request.get("messages") or []
    users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
    first_user = _text(msgs[users[0]].get("content")) if users else ""
    after = msgs[users[-1] + 1 :] if users else msgs
    steps = sum(1 for m in after if m.get("role") == "assistant")
    return _h({"u": first_user, "t": _tool_names(request), "turn": len(users), "step": steps})


class ReplayIndex:
    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Any]] = {}
        self._position: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._exact)

    def add(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        self._exact.setdefault(exact_key(request), response)
        self._position.setdefault(position_key(request), response)

    def lookup(self, request: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        hit = self._exact.get(exact_key(request))
        if hit is not None:
            return hit, "exact"
        hit = self._position.get(position_key(request))
        if hit is not None:
            return hit, "position"
        return None, "miss"

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> ReplayIndex:
        idx = cls()
        for req, resp in pairs:
            if resp:
                idx.add(req, resp)
        return idx

    @classmethod
    def from_store(cls, store: TraceStore, **filters: Any) -> ReplayIndex:
        """Every successful teacher answer in the store."""
        return cls.from_pairs(
            (t.request, t.response)
            for t in store.iter_traces(status="ok", **filters)
            if t.served_by != "student"
        )

    @classmethod
    def from_bfcl(cls, categories: Iterable[str], *, limit: int | None = None, **kw: Any) -> ReplayIndex:
        from protege.importers.bfcl import iter_bfcl_exchanges

        return cls.from_pairs((ex.request, ex.response) for ex in iter_bfcl_exchanges(categories, limit=limit, **kw))

    @classmethod
    def from_jsonl(cls, path: str | Path) -> ReplayIndex:
        """Raw exports or Data Flywheel logs: lines with ``request`` and ``response``."""
        pairs = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json_loads(line)
                    pairs.append((rec["request"], rec["response"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{n}: not a request/response record ({exc})") from None
        return cls.from_pairs(pairs)

    @classmethod
    def from_source(cls, source: str, *, store: TraceStore = None, limit: int | None = None) -> ReplayIndex:
        """``store`` | ``bfcl:CAT[,CAT...]`` | a JSONL file."""
        if source == "store":
            if store is None:
                raise ValueError("--from store needs a store")
            return cls.from_store(store)
        if source.startswith("bfcl:"):
            cats = [c for c in source[5:].split(",") if c]
            return cls.from_bfcl(cats, limit=limit)
        if Path(source).exists():
            return cls.from_jsonl(source)
        raise ValueError(f"unknown replay source {source!r}: use store, bfcl:CATEGORY[,CATEGORY] or a JSONL file")


def _error(status: int, message: str, type_: str, code: str | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": code}}, status_code=status)


def create_replay_app(index: ReplayIndex, *, model: str = "replay-teacher") -> Any:
    """The replay teacher as an ASGI app (OpenAI chat completions, streaming too)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from protege.router.sse import completion_to_sse

    stats = {"exact": 0, "position": 0, "miss": 0}

    async def chat(request: Request) -> Any:
        try:
            body = json_loads(await request.body())
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is required", "invalid_request_error", "missing_messages")
        answer, how = index.lookup(body)
        stats[how] += 1
        if answer is None:
            return _error(
                404,
                "the replay teacher has no recorded answer for this conversation",
                "not_found_error",
                "no_recorded_answer",
            )
        resp = copy.deepcopy(answer)
        resp["created"] = int(time.time())
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(completion_to_sse(resp, include_usage=include), media_type="text/event-stream")
        return JSONResponse(resp)

    async def models(_: Request) -> Any:
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "protege"}]})

    async def health(_: Request) -> Any:
        return JSONResponse({"status": "ok", "answers": len(index), "lookups": stats})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/health", health),
        ]
    )
