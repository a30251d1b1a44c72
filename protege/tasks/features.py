"""What discovery looks at in one trace: cheap to extract, no model involved."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from protege.safejson import json_loads
from protege.store.records import Trace
from protege.tasks.fingerprint import (
    _text_of,
    combine,
    fingerprint_parts,
    system_prompt,
    template_of,
    tool_names,
)


@dataclass(slots=True)
class CallFeatures:
    id: str
    tag: str | None
    fp: str  # call-site fingerprint
    template: str  # system-prompt template hash (part of the fingerprint)
    instruction: str  # last user message
    instruction_key: str  # the instruction with its variable spans masked
    called: tuple[str, ...]  # tools called in the answer, sorted, distinct
    history: tuple[str, ...]  # tools called earlier in this tool loop (since the last user message)
    output_type: str  # tool_call | json | text (label is decided per task)
    answer: str  # canonical answer, to measure determinism
    input_key: str  # hash of the input side, to find identical inputs
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    session: str | None = None  # the agent run this call belongs to
    offered: tuple[str, ...] = ()  # tool names the request offered (shared tuple per tool set)
    style: float = 0.5  # identifier style of the called tools: 0 snake_case .. 1 camelCase (0.5: no evidence)
    agent: str = ""  # who the system prompt says the model is ("TradingBot"), for the task's name


def _canonical(value: Any) -> bytes:
    try:
        import orjson

        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (ImportError, TypeError):
        return json.dumps(value, sort_keys=True, default=str).encode()


def last_user_message(request: dict[str, Any]) -> str:
    for msg in reversed(request.get("messages") or ()):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _text_of(msg.get("content"))
    return ""


def _history_tools(request: dict[str, Any]) -> tuple[str, ...]:
    """Tools the agent already called since the last user message (the
    earlier steps of the tool loop this call is part of)."""
    names: set[str] = set()
    for msg in reversed(request.get("messages") or ()):
        if not isinstance(msg, dict):
            continue
        if msg.get("role") == "user":
            break
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            names.update((tc.get("function") or {}).get("name") or "" for tc in msg["tool_calls"])
    names.discard("")
    return tuple(sorted(names))


def _message(response: dict[str, Any] | None) -> dict[str, Any]:
    choices = (response or {}).get("choices") or []
    return (choices[0].get("message") or {}) if choices else {}


def answer_of(response: dict[str, Any] | None) -> tuple[str, str, tuple[str, ...]]:
    """(output type, canonical answer, called tool names)."""
    msg = _message(response)
    calls = msg.get("tool_calls") or []
    if calls:
        canon = []
        for tc in calls:
            fn = tc.get("function") or {}
            args = fn.get("arguments")
            try:
                args = json_loads(args) if isinstance(args, str) else args
            except ValueError:
                pass
            canon.append([fn.get("name"), args])
        names = tuple(sorted({c[0] for c in canon if c[0]}))
        return "tool_call", json.dumps(canon, sort_keys=True, default=str), names
    content = _text_of(msg.get("content")).strip()
    if content[:1] in "{[":
        try:
            value = json_loads(content)
            return "json", json.dumps(value, sort_keys=True), ()
        except ValueError:
            pass
    return "text", content, ()


_CAMEL = re.compile(r"[a-z][A-Z]")
_SNAKE = re.compile(r"[a-z0-9]_[a-z]")
# name -> (camelCase identifiers, snake_case identifiers) in the tool's name and
# parameter names; bounded so per-request tools cannot grow it without end.
_STYLE: dict[str, tuple[int, int]] = {}
_OFFERED: dict[tuple[str, ...], tuple[str, ...]] = {}


def _identifier_counts(fn: dict[str, Any]) -> tuple[int, int]:
    params = (fn.get("parameters") or {}).get("properties") or {}
    idents = [*str(fn.get("name") or "").split("."), *(params if isinstance(params, dict) else ())]
    camel = sum(1 for i in idents if _CAMEL.search(i))
    snake = sum(1 for i in idents if _SNAKE.search(i))
    return camel, snake


def tool_style(request: dict[str, Any], names: tuple[str, ...]) -> float:
    """Share of camelCase among the camelCase or snake_case identifiers (tool
    and parameter names) of the called tools. Functions written in one codebase
    follow one convention, so this tells apart call sites that bring their own
    functions (a Java or JavaScript client against a Python one) where the
    instructions read alike. 0.5 when the names say nothing (single words)."""
    if not names:
        return 0.5
    missing = [n for n in names if n not in _STYLE]
    if missing:
        if len(_STYLE) > 50_000:
            _STYLE.clear()
        for tool in request.get("tools") or ():
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and fn.get("name") in missing:
                _STYLE[fn["name"]] = _identifier_counts(fn)
    camel = snake = 0
    for n in names:
        c, s = _STYLE.get(n, (0, 0))
        camel += c
        snake += s
    return camel / (camel + snake) if camel + snake else 0.5


def tool_docs(request: dict[str, Any]) -> dict[str, str]:
    """name -> 'name words: description' for each offered tool."""
    out = {}
    for tool in request.get("tools") or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            words = fn["name"].replace("_", " ").replace(".", " ")
            out[fn["name"]] = f"{words}: {fn.get('description') or ''}"[:400]
    return out


# "You are the TradingBot assistant", "Act as a SQL expert": the role the
# prompt gives, cut before the words that only say it is an assistant.
_ROLE = re.compile(r"\b(?:you are|you're|act as)\s+(?:an?\s+|the\s+|your\s+)?([^.,;:!?\n()]{2,80})", re.I)
_ROLE_END = re.compile(r"\s+(?:assistant|agent|bot|helper|model|who|that|which|for|of|in|with|to|and you)\b.*$", re.I)
_GENERIC = frozenset({"helpful", "useful", "friendly", "ai", "an", "a", "the", "large", "language", "smart",
                      "expert", "assistant", "agent", "model", "chatbot", "capable", "knowledgeable",
                      "professional", "experienced", "skilled", "polite", "concise", "careful", "precise"})
_NOT_ROLE = frozenset({"given", "going", "asked", "provided", "tasked", "able", "now", "to", "not", "allowed",
                       "being", "working", "currently", "also", "only", "in", "at", "on"})


@lru_cache(maxsize=4096)
def agent_of(system: str) -> str:
    """The role a system prompt gives the model ("TradingBot" in "You are the
    TradingBot assistant of this application"), or "" for a generic one."""
    for m in _ROLE.finditer(system[:2000]):
        if m.group(1).split()[0].lower() in _NOT_ROLE:
            continue
        who = _ROLE_END.sub("", m.group(1)).strip()
        words = [w for w in who.split() if w.lower() not in _GENERIC]
        if words and len(words) <= 5:
            return " ".join(words)
    return ""


def extract(trace: Trace, docs: dict[str, str] | None = None) -> CallFeatures:
    """Features of one trace; ``docs`` collects the descriptions of the tools
    it calls (first description seen wins)."""
    req = trace.request or {}
    t, s, r = fingerprint_parts(req)
    fp = combine(t, s, r)
    out_type, answer, called = answer_of(trace.response)
    if req.get("response_format") and out_type == "text":
        out_type = "json" if "json" in str(req["response_format"].get("type", "")) else out_type
    history = _history_tools(req)
    offered_names = tool_names(req)
    if docs is not None:
        wanted = [n for n in called + history if n not in docs]
        if wanted:
            offered = tool_docs(req)
            for n in wanted:
                docs[n] = offered.get(n, n.replace("_", " "))
    instruction = last_user_message(req)
    input_text = _canonical(
        [m for m in req.get("messages") or () if not (isinstance(m, dict) and m.get("role") == "system")]
    )
    return CallFeatures(
        id=trace.id,
        tag=trace.task_tag,
        fp=fp,
        template=t,
        instruction=instruction,
        instruction_key=template_of(instruction[:2000]),
        called=called,
        history=history,
        output_type=out_type,
        answer=answer,
        input_key=hashlib.blake2b(input_text, digest_size=8).hexdigest(),
        prompt_tokens=trace.prompt_tokens,
        completion_tokens=trace.completion_tokens,
        cost_usd=trace.cost_usd,
        session=trace.session_id,
        offered=_OFFERED.setdefault(offered_names, offered_names) if len(_OFFERED) < 50_000 else offered_names,
        style=tool_style(req, called),
        agent=agent_of(system_prompt(req)),
    )
