"""Validation of a student's answer before any byte of it leaves the gateway.

An answer that fails any check is never sent: the original request goes to
the teacher and the reasons are stored on the trace.
"""

from __future__ import annotations

from typing import Any

from protege.evaluate.metrics import schema_errors
from protege.safejson import json_loads

ACCEPTABLE_FINISH = frozenset({"stop", "tool_calls", "function_call"})


def offered_tools(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for tool in request.get("tools") or []:
        fn = (tool or {}).get("function") or {}
        if fn.get("name"):
            out[fn["name"]] = fn.get("parameters") or {}
    return out


def validate_answer(
    request: dict[str, Any], message: dict[str, Any], finish_reason: str | None
) -> list[str]:
    """Reasons the answer must not be served; an empty list means valid.

    Checks: finish reason, tool names among the offered tools, arguments that
    are a JSON object matching the tool's schema, ``tool_choice`` honoured,
    ``response_format`` satisfied.
    """
    reasons: list[str] = []
    if finish_reason not in ACCEPTABLE_FINISH:
        reasons.append(f"finish_reason:{finish_reason}")
    tools = offered_tools(request)
    calls = message.get("tool_calls") or []
    content = message.get("content")
    for call in calls:
        fn = call.get("function") or {}
        name = fn.get("name")
        if name not in tools:
            reasons.append(f"unknown_tool:{name}")
            continue
        try:
            args = json_loads(fn.get("arguments") or "{}")
        except (TypeError, ValueError):
            reasons.append(f"arguments_not_json:{name}")
            continue
        if not isinstance(args, dict):
            reasons.append(f"arguments_not_object:{name}")
            continue
        errs = schema_errors(args, tools[name])
        if errs:
            reasons.append(f"schema:{name}:{errs[0]}")

    choice = request.get("tool_choice")
    if choice == "none" and calls:
        reasons.append("tool_choice:none_but_called")
    elif choice == "required" and not calls:
        reasons.append("tool_choice:required_but_no_call")
    elif isinstance(choice, dict):
        want = (choice.get("function") or {}).get("name")
        if not calls or any((c.get("function") or {}).get("name") != want for c in calls):
            reasons.append(f"tool_choice:expected:{want}")
    if not calls and not (content or "").strip():
        reasons.append("empty_answer")

    fmt = request.get("response_format") or {}
    ftype = fmt.get("type") if isinstance(fmt, dict) else None
    if ftype in ("json_object", "json_schema") and not calls:
        try:
            parsed = json_loads(content or "")
        except ValueError:
            reasons.append("response_format:not_json")
        else:
            if ftype == "json_object" and not isinstance(parsed, dict):
                reasons.append("response_format:not_object")
            elif ftype == "json_schema":
                schema = (fmt.get("json_schema") or {}).get("schema")
                errs = schema_errors(parsed, schema)
                if errs:
                    reasons.append(f"response_format:schema:{errs[0]}")
    return reasons
