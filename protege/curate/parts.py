"""Decoding stored requests without decoding their tool schemas every time.

A request of an agent with many tools is mostly its ``tools`` list (tens of
kB of JSON schemas), identical on every call of a call site; curation never
changes it (tools are not scrubbed) and needs from it only the offered names,
the schemas of the tools actually called and a digest for the exact-dedup
hash. ``RequestDecoder`` cuts the raw text of the top-level ``tools`` value out
of the stored JSON, decodes it once per distinct value and shares the parsed
list (read only) between every request that carries it; only the rest of the
request (the conversation, small) is decoded per trace.

The cut is verified, never trusted: the raw value is replaced by a sentinel
string and the rest decoded; the result is used only when the sentinel came
back as the request's top-level ``tools``. Anything else (tools not an array,
an unusual layout, invalid JSON) falls back to decoding the whole text.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

_KEY = '"tools":'
_SENTINEL = "\x00protege-tools\x00"
_SENTINEL_JSON = orjson.dumps(_SENTINEL).decode()


def tools_digest(tools: Any) -> str | None:
    """Digest of the canonical JSON of a tools list (``None`` for no tools)."""
    if tools is None:
        return None
    blob = orjson.dumps(tools, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(blob).hexdigest()[:32]


class RequestDecoder:
    """Decodes stored request JSON, sharing one parsed ``tools`` list (and its
    digest) per distinct raw value. The shared lists must not be mutated."""

    def __init__(self, max_entries: int = 4096, min_size: int = 512) -> None:
        self._tools: dict[str, tuple[Any, str | None]] = {}
        self.max_entries = max_entries
        self.min_size = min_size  # below this, a plain decode is as cheap
        self.stats = {"hits": 0, "misses": 0, "plain": 0}

    def decode(self, text: str) -> tuple[dict[str, Any], str | None]:
        """(request, digest of its tools or ``None``); equal to ``orjson.loads(text)``."""
        if len(text) >= self.min_size:
            got = self._split(text)
            if got is not None:
                return got
        self.stats["plain"] += 1
        request = orjson.loads(text)
        tools = request.get("tools") if isinstance(request, dict) else None
        return request, tools_digest(tools)

    def _split(self, text: str) -> tuple[dict[str, Any], str | None] | None:
        start = text.find(_KEY)
        end = text.rfind("]") + 1
        if start < 0 or end <= start:
            return None
        start += len(_KEY)
        while text[start : start + 1] in (" ", "\n", "\t", "\r"):
            start += 1
        if text[start : start + 1] != "[":
            return None
        raw = text[start:end]
        if len(raw) < self.min_size:
            return None
        try:
            rest = orjson.loads(text[:start] + _SENTINEL_JSON + text[end:])
        except orjson.JSONDecodeError:
            return None
        if not isinstance(rest, dict) or rest.get("tools") != _SENTINEL:
            return None
        cached = self._tools.get(raw)
        if cached is None:
            try:
                tools = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return None
            cached = (tools, tools_digest(tools))
            if len(self._tools) >= self.max_entries:
                self._tools.clear()
            self._tools[raw] = cached
            self.stats["misses"] += 1
        else:
            self.stats["hits"] += 1
        rest["tools"] = cached[0]
        return rest, cached[1]
