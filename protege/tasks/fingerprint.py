"""Call-site fingerprints: which line of agent code made this call?

A call site is recognised by three things that stay fixed while the data
flowing through it changes: the system-prompt *template* (the prompt with its
variable spans masked), the set of tool names offered, and the
``response_format`` schema. The fingerprint hashes the three.

Masking is a pure function of the prompt string, memoised by the exact string:
an agent sends the same few system prompts over and over, so on the gateway's
hot path the fingerprint costs one dict lookup plus a hash of the tool names.
We use ordered regular expressions rather than a log-template miner such as
Drain3: Drain learns templates online, so the same prompt can get a different
template depending on what it saw before and in which process; a fingerprint
must be a stable pure function shared by the gateway, the router and the
offline discovery.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

# Order matters: the most specific shapes first so that, e.g., the digits of a
# uuid are not masked one number at a time.
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<ID>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<EMAIL>"),
    (re.compile(r"\bhttps?://\S+"), "<URL>"),
    # ISO dates and times, with optional time part and zone.
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
        ),
        "<DATE>",
    ),
    (re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"), "<DATE>"),
    (
        re.compile(
            r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s+|"
            r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?(?:\s+\d{4})?\b|"
            r"\b\d{1,2}(?:st|nd|rd|th)?\s+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?(?:,?\s+\d{4})?\b"
        ),
        "<DATE>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b"), "<TIME>"),
    # Hex digests, ids with letters and digits mixed (order ids, api keys, ULIDs).
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<ID>"),
    (re.compile(r"\b(?=\w*\d)(?=\w*[A-Za-z])[\w-]{6,}\b"), "<ID>"),
    (re.compile(r"(?<![\w<])[-+]?\d+(?:[.,]\d+)*\b"), "<NUM>"),
    # Quoted values: what sits between quotes is data, not template.
    (re.compile(r"\"[^\"\n]{0,200}\"|'[^'\n]{1,200}'|`[^`\n]{1,200}`|«[^»\n]{0,200}»"), "<QUOTED>"),
    # Name-ish spans: capitalised words that do not start a sentence or line
    # (people, companies, cities). Template words are rarely capitalised mid-sentence.
    (re.compile(r"(?<=[a-z] )(?:[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*)"), "<NAME>"),
)

_WS = re.compile(r"\s+")


@lru_cache(maxsize=8192)
def template_of(text: str) -> str:
    """The prompt with its variable spans masked (memoised by exact string)."""
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    return _WS.sub(" ", text).strip()


@lru_cache(maxsize=8192)
def _template_hash(text: str) -> str:
    return hashlib.blake2b(template_of(text).encode(), digest_size=8).hexdigest()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def system_prompt(request: dict[str, Any]) -> str:
    """The leading system/developer messages of a chat request, joined."""
    parts = []
    for msg in request.get("messages") or ():
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "developer"):
            break
        parts.append(_text_of(msg.get("content")))
    return "\n".join(parts)


def tool_names(request: dict[str, Any]) -> tuple[str, ...]:
    names = set()
    for tool in request.get("tools") or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            names.add(fn["name"])
    for fn in request.get("functions") or ():
        if isinstance(fn, dict) and fn.get("name"):
            names.add(fn["name"])
    return tuple(sorted(names))


def _schema_hash(response_format: Any) -> str:
    if not response_format:
        return ""
    if isinstance(response_format, dict) and set(response_format) == {"type"}:
        return str(response_format["type"])
    text = json.dumps(response_format, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def fingerprint_parts(request: dict[str, Any]) -> tuple[str, str, str]:
    """(template hash, tool-set hash, response-format hash)."""
    tools = tool_names(request)
    tools_h = hashlib.blake2b("\x1f".join(tools).encode(), digest_size=6).hexdigest() if tools else ""
    return _template_hash(system_prompt(request)), tools_h, _schema_hash(request.get("response_format"))


def fingerprint(request: dict[str, Any]) -> str:
    """Call-site fingerprint of an OpenAI chat request: ``fp_`` + 16 hex digits.

    Equal for calls from one site whatever the user, date or ids in the prompt;
    different when the prompt template, the offered tools or the output schema
    differ."""
    return combine(*fingerprint_parts(request))


def combine(template: str, tools: str, schema: str) -> str:
    return "fp_" + hashlib.blake2b(f"{template}|{tools}|{schema}".encode(), digest_size=8).hexdigest()
