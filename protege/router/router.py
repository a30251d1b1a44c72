"""The router: a task lookup plus a rollout rule, and nothing slow.

For each request: fingerprint -> task (the same code as task discovery), else
the embedding classifier (nearest task within a distance threshold), else the
teacher. A student serves only when its task is routed to it, an adapter is
promoted, the offered tools are those it was trained on, and the request fits
its context window.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protege.router.routes import Route, RouteTable


@dataclass(frozen=True)
class StudentInfo:
    """What the router needs to know of a promoted adapter."""

    adapter: str  # "task_id:vN" or a registry id
    tools: frozenset[str] | None = None  # tool names it was trained on; None: any
    max_prompt_chars: int | None = None  # rough context fit without tokenising
    status: str = "promoted"  # a "shadow" adapter only ever runs in the background
    # The gate's confidence floor: answers less sure than this go to the teacher.
    min_confidence: float | None = None
    confidence_signal: str | None = None  # the signal the floor is on (None: min_prob)


@dataclass
class Decision:
    target: str  # "teacher" | "student"
    task_id: str | None = None
    adapter: str | None = None
    shadow: bool = False  # teacher answers; the student runs in the background
    reason: str = ""
    confidence: float | None = None
    min_confidence: float | None = None  # the student's answer must be at least this sure
    confidence_signal: str | None = None  # ...on this signal (``protege.models.confidence``)
    decision_us: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


Assign = Callable[[dict[str, Any], str | None], tuple[str | None, float | None]]
Promoted = Callable[[str], StudentInfo | None]


class Router:
    def __init__(self, *, assign: Assign, promoted: Promoted, routes: RouteTable | Callable[[str], Route]) -> None:
        self.assign = assign
        self.promoted = promoted
        self._route = routes.get if isinstance(routes, RouteTable) else routes

    def decide(self, request: dict[str, Any], *, tag: str | None = None, key: str | None = None) -> Decision:
        t0 = time.perf_counter()
        d = self._decide(request, tag, key)
        d.decision_us = (time.perf_counter() - t0) * 1e6
        return d

    def _decide(self, request: dict[str, Any], tag: str | None, key: str | None) -> Decision:
        task_id, conf = self.assign(request, tag)
        if task_id is None:
            return Decision("teacher", reason="no_task", confidence=conf)
        route = self._route(task_id)
        if route.mode == "off":
            return Decision("teacher", task_id, reason="route_off", confidence=conf)
        student = self.promoted(task_id)
        if student is None:
            return Decision("teacher", task_id, reason="no_adapter", confidence=conf)
        if request.get("n", 1) not in (None, 1):
            return Decision("teacher", task_id, reason="n_gt_1", confidence=conf)
        if student.tools is not None:
            offered = {
                (t.get("function") or {}).get("name") for t in request.get("tools") or [] if isinstance(t, dict)
            }
            if not offered <= student.tools:
                return Decision("teacher", task_id, reason="tools_mismatch", confidence=conf)
        if student.max_prompt_chars is not None:
            size = sum(len(str(m.get("content") or "")) for m in request.get("messages") or [])
            if size > student.max_prompt_chars:
                return Decision("teacher", task_id, reason="context", confidence=conf)
        if route.mode == "shadow" or student.status == "shadow":
            return Decision(
                "teacher", task_id, student.adapter, shadow=True, reason="shadow", confidence=conf,
                min_confidence=student.min_confidence,
                confidence_signal=student.confidence_signal,
            )
        if route.mode == "canary":
            bucket = zlib.crc32((key or str(time.perf_counter_ns())).encode()) % 10000 / 100.0
            if bucket >= route.canary_pct:
                return Decision("teacher", task_id, student.adapter, reason="canary_control", confidence=conf)
        return Decision(
            "student", task_id, student.adapter, reason=route.mode, confidence=conf,
            min_confidence=student.min_confidence,
            confidence_signal=student.confidence_signal,
        )
