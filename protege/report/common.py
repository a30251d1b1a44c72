"""Tolerant reads of stored values for the report: a number or JSON text that
may be missing or malformed reads as None, never as an error."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protege.store.db import TraceStore

UNASSIGNED = "(unassigned)"


def num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def loads(text: Any) -> Any:
    if text is None or isinstance(text, dict | list):
        return text
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def task_key(task_id: str | None) -> str:
    return task_id if task_id is not None else UNASSIGNED


def fetch_rows(store: TraceStore, query: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every row of ``query`` as a plain dict."""
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query, params or {})]
