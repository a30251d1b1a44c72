"""Turn a request and its response into a ``Trace`` with the extracted columns."""

from __future__ import annotations

from typing import Any

from protege.prices import cost_usd
from protege.store.records import Trace


def tools_offered(request: dict[str, Any]) -> list[str]:
    names = []
    for tool in request.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            names.append(fn["name"])
    for fn in request.get("functions") or []:  # legacy function calling
        if isinstance(fn, dict) and fn.get("name"):
            names.append(fn["name"])
    return names


def tools_called(response: dict[str, Any] | None) -> list[str]:
    names = []
    for choice in (response or {}).get("choices") or []:
        msg = choice.get("message") or {}
        for tc in msg.get("tool_calls") or []:
            name = (tc.get("function") or {}).get("name")
            if name:
                names.append(name)
        fc = msg.get("function_call")
        if isinstance(fc, dict) and fc.get("name"):
            names.append(fc["name"])
    return names


def build_trace(
    request: dict[str, Any],
    response: dict[str, Any] | None,
    **fields: Any,
) -> Trace:
    """A trace for one call. ``fields`` set any ``Trace`` attribute (status,
    latency_ms, client_id, ...); what they leave out is read off the payloads."""
    resp = response if isinstance(response, dict) else None
    usage = (resp or {}).get("usage") or {}
    choices = (resp or {}).get("choices") or []
    values: dict[str, Any] = {
        "request": request,
        "response": response,
        "model": request.get("model"),
        "upstream_model": (resp or {}).get("model"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "tools_offered": tools_offered(request),
        "tools_called": tools_called(resp),
        "finish_reason": choices[0].get("finish_reason") if choices else None,
        "stream": bool(request.get("stream")),
    }
    values.update({k: v for k, v in fields.items() if v is not None})
    if values.get("cost_usd") is None and values.get("served_by", "teacher") != "student":
        values["cost_usd"] = cost_usd(
            values.get("upstream_model") or values.get("model"),
            values.get("prompt_tokens"),
            values.get("completion_tokens"),
        )
    return Trace(**values)
