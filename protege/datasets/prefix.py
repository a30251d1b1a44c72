"""A task's static prefix: the system prompt and tool schemas that every call
of the task sends verbatim. A student can be trained and served without it
(the router adds nothing back: the prefix carries no per-call information)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def system_text(messages: Sequence[dict[str, Any]]) -> str | None:
    """The leading system (or developer) message's text, if any."""
    if not messages or messages[0].get("role") not in ("system", "developer"):
        return None
    content = messages[0].get("content")
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else None


NEAR_SHARE = 0.8
CORE_SHARE = 0.95  # a system prompt sent by this share of rows is the task's


def detect_prefix(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"system": str | None, "tools": [...] | None, "tools_identical": bool}``.

    ``system`` is the system prompt when every row, or all but a few
    (``CORE_SHARE``), sends the very same one (a prompt that varies even
    partly is not static, so None); the tools are then those of its rows. ``tools`` is the
    list of tools every row offers, in the first row's order: the whole tool
    list when it is identical across rows (``tools_identical``); when the
    lists differ only a little (every row offers at least ``NEAR_SHARE`` of
    all the tools the rows offer, as when an agent hides a tool for a while)
    every tool any row offers (``tools_union``: a pruned prompt then names the
    few a call lacks instead of repeating the schemas of all it has); else the
    tools common to all rows, or None when there are none.
    """
    if not rows:
        return {"system": None, "tools": None, "tools_identical": False}
    counts = Counter(system_text(r.get("messages") or []) for r in rows)
    system, n_system = counts.most_common(1)[0]
    if n_system < CORE_SHARE * len(rows):
        system = None
    elif system is not None and not system.strip():
        system = None
    if system is not None and n_system < len(rows):
        # A few calls from another call site in the task (discovery is not
        # perfect): the prefix is the site's, and those calls keep their own
        # system prompt and tools in full.
        rows = [r for r in rows if system_text(r.get("messages") or []) == system]

    tool_lists = [r.get("tools") or [] for r in rows]
    keysets = [{_canon(t) for t in tl} for tl in tool_lists]
    common = set.intersection(*keysets) if keysets else set()
    identical = bool(common) and all(ks == keysets[0] for ks in keysets)
    tools = [t for t in tool_lists[0] if _canon(t) in common] or None
    union: dict[str, dict[str, Any]] = {}
    for tl in tool_lists:
        for t in tl:
            union.setdefault(_canon(t), t)
    near = bool(union) and not identical and all(len(ks) >= NEAR_SHARE * len(union) for ks in keysets)
    if near:
        tools = list(union.values())
    return {"system": system, "tools": tools, "tools_identical": identical, "tools_union": near}


def prefix_tokens_saved(rows: Sequence[dict[str, Any]], prefix: dict[str, Any]) -> float:
    """Rough share of prompt characters the prefix accounts for (what a
    student served without it saves on every call)."""
    static = len(prefix.get("system") or "") + sum(len(_canon(t)) for t in prefix.get("tools") or [])
    if not rows or not static:
        return 0.0
    total = sum(len(_canon(r.get("messages"))) + len(_canon(r.get("tools") or [])) for r in rows) / len(rows)
    return round(min(1.0, static / total), 4) if total else 0.0
