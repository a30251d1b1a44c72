"""The student's tool-call format: render training targets, parse generated text.

One module does both directions so a student is served in exactly the format
it was trained on. A model whose chat template knows tools gets them through
``apply_chat_template(tools=...)``; a model without (SmolLM2, base models) gets
them described in the system message, Hermes-style, and answers with

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

one block per call (parallel calls are several blocks). Any free text comes
before the blocks.

A student trained without its task's static prefix (``drop_prefix``) sees a
lean prompt: no shared system prompt, no shared tool schemas, and the tools
particular to the call as compact JSON with no format instructions (it
learned the format); ``build_prompt`` renders it the same way at serve time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from protege.safejson import json_loads

__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "answer_suffix",
    "build_prompt",
    "content_text",
    "compact_tools_text",
    "parse_completion",
    "prepare_messages",
    "render_answer",
    "render_completion",
    "strip_prefix",
    "supports_tools",
    "tools_system_text",
]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# ChatML, for tokenizers that ship no chat template (base models such as
# Gemma-3-270M). Same shape as SmolLM2's own template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

_TOOLS_HEADER = (
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

# Special tokens a generation may end with when decoded without skipping them.
_END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "</s>", "<eos>")


# -- rendering -------------------------------------------------------------------


def _arguments_obj(arguments: Any) -> Any:
    """OpenAI carries arguments as a JSON string; the student writes an object."""
    if isinstance(arguments, str):
        try:
            return json_loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return arguments  # kept verbatim: the teacher's invalid JSON is not ours to fix
    return {} if arguments is None else arguments


def _call_parts(call: dict[str, Any]) -> tuple[str, Any]:
    fn = call.get("function") or call
    return str(fn.get("name") or ""), _arguments_obj(fn.get("arguments"))


def render_completion(message: dict[str, Any], tokenizer: Any = None) -> str:
    """An assistant message as the text the student must generate (no end-of-turn token).

    ``tokenizer`` is accepted for models with a native tool-call syntax; every
    model protege ships today uses the Hermes blocks, so it is not consulted.
    """
    parts: list[str] = []
    content = content_text(message.get("content"))
    if content:
        parts.append(content)
    for call in message.get("tool_calls") or []:
        name, args = _call_parts(call)
        body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
        parts.append(f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")
    return "\n".join(parts)


def tools_system_text(tools: Sequence[dict[str, Any]]) -> str:
    """Hermes-style tool description for templates without tool support."""
    lines = [json.dumps(t, ensure_ascii=False) for t in tools]
    return _TOOLS_HEADER + "\n".join(lines) + _TOOLS_FOOTER


def compact_tools_text(tools: Sequence[dict[str, Any]]) -> str:
    """Per-call tool schemas for a pruned prompt: no instructions (the student
    learned the format), compact JSON, one function per line."""
    lines = [json.dumps(t.get("function", t), ensure_ascii=False, separators=(",", ":")) for t in tools]
    return "<tools>\n" + "\n".join(lines) + "\n</tools>"


def supports_tools(tokenizer: Any) -> bool:
    """Does the tokenizer's chat template render a ``tools=`` argument?"""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default or a "tool_use" one
        template = template.get("tool_use") or template.get("default")
    return bool(template) and "tools" in str(template)


def content_text(content: Any) -> str:
    """OpenAI content may be a string, None or a list of parts; keep the text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") in (None, "text"):
                    out.append(str(part.get("text", "")))
            else:
                out.append(str(part))
        return "".join(out)
    return str(content)


def _same_tools(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> bool:
    def key(t: dict[str, Any]) -> str:
        return json.dumps(t, sort_keys=True, ensure_ascii=False)

    return sorted(map(key, a)) == sorted(map(key, b))


def strip_prefix(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None,
    prefix: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Remove the task's static prefix (system prompt, shared tool schemas).

    The system message goes when it equals the prefix's; when it only starts
    with it (a template with a variable tail) the tail stays. Tools shared by
    every call go; tools particular to this call stay.
    """
    msgs = [dict(m) for m in messages]
    prefix = prefix or {}
    system = prefix.get("system")
    if system and msgs and msgs[0].get("role") in ("system", "developer"):
        text = content_text(msgs[0].get("content"))
        if text.strip() == system.strip():
            msgs = msgs[1:]
        elif text.startswith(system):
            rest = text[len(system) :].strip()
            msgs = ([{**msgs[0], "content": rest}] if rest else []) + msgs[1:]
    static_tools = prefix.get("tools")
    if tools and static_tools:
        if _same_tools(tools, static_tools):
            tools = None
        else:
            keys = {json.dumps(t, sort_keys=True) for t in static_tools}
            tools = [t for t in tools if json.dumps(t, sort_keys=True) not in keys] or None
    return msgs, (list(tools) if tools else None)


def _missing_static_tools(tools: Sequence[dict[str, Any]] | None, prefix: dict[str, Any] | None) -> list[str]:
    """Names of the task's shared tools that this call does not offer."""
    static = (prefix or {}).get("tools") or []
    if not static or tools is None:
        return []
    offered = {str((t.get("function") or t).get("name")) for t in tools}
    return sorted({str((t.get("function") or t).get("name")) for t in static} - offered)


def prepare_messages(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None,
    tokenizer: Any,
    *,
    prefix: dict[str, Any] | None = None,
    drop_prefix: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Messages and tools as the template should see them.

    Returns ``(messages, tools_for_template)``; the second is None when the
    tools were folded into the system message (template without tool support).
    """
    missing: list[str] = []
    if drop_prefix:
        missing = _missing_static_tools(tools, prefix)
        messages, tools = strip_prefix(messages, tools, prefix)
    native = supports_tools(tokenizer)
    compact = drop_prefix and bool(tools)
    if compact:
        native = False  # a pruned prompt keeps only the per-call schemas, without the template's preamble
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role") or "user"
        if role == "developer":
            role = "system"
        if role == "assistant" and m.get("tool_calls") and not native:
            out.append({"role": "assistant", "content": render_completion(m, tokenizer)})
        elif role == "tool" and not native:
            out.append(
                {"role": "tool", "content": f"<tool_response>\n{content_text(m.get('content'))}\n</tool_response>"}
            )
        elif role == "assistant" and m.get("tool_calls"):
            calls = [
                {"type": "function", "function": {"name": n, "arguments": a}}
                for n, a in map(_call_parts, m["tool_calls"])
            ]
            out.append({"role": "assistant", "content": content_text(m.get("content")), "tool_calls": calls})
        else:
            out.append({"role": role, "content": content_text(m.get("content"))})
    if missing:
        # The student learnt the shared tools by heart and sees none of them:
        # it must be told which of them this call lacks (an agent that hides a
        # tool expects to hear "I can't", not a call it cannot make).
        note = "<unavailable>" + ", ".join(missing) + "</unavailable>"
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{note}" if out[0]["content"] else note}
        else:
            out.insert(0, {"role": "system", "content": note})
    if tools and not native:
        desc = compact_tools_text(tools) if compact else tools_system_text(tools)
        if out and out[0]["role"] == "system":
            out[0] = {
                "role": "system",
                "content": f"{out[0]['content']}\n\n{desc}" if out[0]["content"] else desc,
            }
        else:
            out.insert(0, {"role": "system", "content": desc})
        return out, None
    return out, (list(tools) if tools else None)


def _apply_template(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, **kwargs: Any) -> str:
    extra: dict[str, Any] = {}
    if not getattr(tokenizer, "chat_template", None):
        extra["chat_template"] = CHATML_TEMPLATE
    if tools:
        extra["tools"] = tools
    return tokenizer.apply_chat_template(messages, tokenize=False, **extra, **kwargs)


def build_prompt(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None,
    tokenizer: Any,
    *,
    prefix: dict[str, Any] | None = None,
    drop_prefix: bool = False,
    tokenize: bool = False,
) -> Any:
    """The prompt the student sees, ending where its answer starts.

    Returns text, or token ids with ``tokenize=True`` (no extra special tokens:
    the template already carries them).
    """
    msgs, tpl_tools = prepare_messages(messages, tools, tokenizer, prefix=prefix, drop_prefix=drop_prefix)
    text = _apply_template(tokenizer, msgs, tpl_tools, add_generation_prompt=True)
    if tokenize:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return text


_SENTINEL = "\x00PROTEGE\x00"


def answer_suffix(tokenizer: Any) -> str:
    """What the chat template puts after an assistant message's content, up to
    and including the end-of-turn token: the student learns to stop there."""
    cache = getattr(tokenizer, "_protege_answer_suffix", None)
    if cache is not None:
        return cache
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = _apply_template(tokenizer, msgs, None)
        tail = text.split(_SENTINEL, 1)[1]
    except Exception:  # templates that insist on other shapes: fall back to the EOS token
        tail = ""
    eos = getattr(tokenizer, "eos_token", None) or ""
    if eos and eos in tail:
        tail = tail[: tail.index(eos) + len(eos)]
    else:
        tail = tail.rstrip() or eos
    try:
        tokenizer._protege_answer_suffix = tail
    except AttributeError:
        pass
    return tail


def render_answer(message: dict[str, Any], tokenizer: Any) -> str:
    """The training target: the rendered completion plus the end-of-turn marker."""
    return render_completion(message, tokenizer) + answer_suffix(tokenizer)


# -- parsing ---------------------------------------------------------------------

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|(?=<tool_call>)|\Z)", re.DOTALL)
_DECODER = json.JSONDecoder()


def _call_id(index: int, name: str, arguments: str) -> str:
    digest = hashlib.sha1(f"{index}\x00{name}\x00{arguments}".encode()).hexdigest()[:24]
    return f"call_{digest}"


def _parse_call(body: str) -> tuple[str, str] | None:
    """``{"name", "arguments"}`` from a block body; tolerant of junk after the JSON."""
    start = body.find("{")
    if start < 0:
        return None
    try:
        obj, _ = _DECODER.raw_decode(body[start:])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models emit the OpenAI string form
        try:
            args = json_loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return name, json.dumps(args, ensure_ascii=False)


def parse_completion(text: str) -> dict[str, Any]:
    """Generated text -> an OpenAI assistant message.

    Blocks that do not parse stay in ``content`` verbatim, so a validator sees
    the broken output instead of a silently shortened call list.
    """
    text = text or ""
    for marker in _END_MARKERS:
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    calls: list[dict[str, Any]] = []
    leftover: list[str] = []
    pos = 0
    for m in _BLOCK.finditer(text):
        leftover.append(text[pos : m.start()])
        parsed = _parse_call(m.group(1))
        if parsed is None:
            leftover.append(m.group(0))
        else:
            name, args = parsed
            calls.append(
                {
                    "id": _call_id(len(calls), name, args),
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }
            )
        pos = m.end()
    leftover.append(text[pos:])
    content = "".join(leftover).strip()
    return {"role": "assistant", "content": content or None, "tool_calls": calls or None}
