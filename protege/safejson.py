"""JSON for input protege did not write itself (files, request bodies, model
answers, spool lines): nesting deep enough to exhaust the parser's recursion
is one more malformed document, a ``json.JSONDecodeError`` (so a ``ValueError``),
never a ``RecursionError``."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any


class JSONTooDeep(json.JSONDecodeError):
    """The document nests deeper than the parser can follow."""


def json_loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        doc = text if isinstance(text, str) else text[:200].decode("utf-8", "replace")
        raise JSONTooDeep("the JSON document is nested too deeply", doc[:200], 0) from None


_deep_lock = threading.Lock()


def json_dumps_deep(value: Any, **kw: Any) -> str:
    """``json.dumps`` for a value that may nest past the recursion limit (a
    request orjson accepted, up to 1024 levels), used where a record must be
    kept whatever its shape: the dead-letter file."""
    try:
        return json.dumps(value, **kw)
    except RecursionError:
        with _deep_lock:
            old = sys.getrecursionlimit()
            sys.setrecursionlimit(max(old, 5000))
            try:
                return json.dumps(value, **kw)
            finally:
                sys.setrecursionlimit(old)
