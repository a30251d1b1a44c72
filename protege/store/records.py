"""The records the store keeps: one ``Trace`` per LLM call, ``Feedback`` on it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from protege.ids import new_id

SERVED_BY = ("teacher", "student", "fallback")


@dataclass(kw_only=True)
class Trace:
    """One LLM call: the verbatim request and response plus the columns that
    later stages query. ``response`` is always a whole ``chat.completion``
    (a streamed answer is reassembled before it is stored)."""

    request: dict[str, Any]
    response: dict[str, Any] | None = None
    id: str = field(default_factory=new_id)
    created_at: float = field(default_factory=time.time)
    source: str = "gateway"  # gateway | sdk | import | simulate
    client_id: str | None = None
    session_id: str | None = None
    task_tag: str | None = None
    task_id: str | None = None
    model: str | None = None
    upstream_model: str | None = None
    served_by: str = "teacher"
    adapter: str | None = None
    status: str = "ok"  # ok | error
    http_status: int | None = None
    error: str | None = None
    fallback_reason: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    tools_offered: list[str] = field(default_factory=list)
    tools_called: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    stream: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: asdict() deep-copies the payloads, which cost more
        # than the whole insert; callers only serialize the result.
        out = {name: getattr(self, name) for name in _TRACE_FIELDS}
        out["tools_offered"] = list(self.tools_offered)
        out["tools_called"] = list(self.tools_called)
        out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


_TRACE_FIELDS = tuple(Trace.__dataclass_fields__)


@dataclass(kw_only=True)
class Feedback:
    """A score or label attached to one trace or to a whole session."""

    trace_id: str | None = None
    session_id: str | None = None
    score: float | None = None
    label: str | None = None
    comment: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    created_at: float = field(default_factory=time.time)
