"""BFCL function docs as OpenAI tools (JSON Schema), and ground-truth
values as the arguments a teacher would have written."""


from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from typing import Any

from protege.importers.bfcl.data import _KEEP_KEYS, _TOOL_NAME, _TYPE_MAP

# -- schema conversion -------------------------------------------------------------


def to_json_schema(node: Any) -> dict[str, Any]:
    """A BFCL parameter schema as JSON Schema: BFCL's Python/Java/JS type names
    mapped (dict -> object, float -> number, tuple -> array, any -> no
    constraint), recursively through properties and items; required, enum,
    description and default kept."""
    if not isinstance(node, dict):
        return {}
    out: dict[str, Any] = {}
    bfcl_type = node.get("type")
    if isinstance(bfcl_type, str) and bfcl_type and bfcl_type.lower() != "any":
        out["type"] = _TYPE_MAP.get(bfcl_type, _TYPE_MAP.get(bfcl_type.lower(), "string"))
    elif isinstance(bfcl_type, list):
        out["type"] = sorted({_TYPE_MAP.get(t, "string") for t in bfcl_type if t != "any"})
    for key in _KEEP_KEYS:
        if key in node:
            out[key] = copy.deepcopy(node[key])
    props = node.get("properties")
    if isinstance(props, dict):
        out.setdefault("type", "object")
        out["properties"] = {k: to_json_schema(v) for k, v in props.items()}
        req = [r for r in node.get("required") or [] if r in props]
        if req:
            out["required"] = req
    items = node.get("items")
    if isinstance(items, dict):
        out["items"] = to_json_schema(items)
    elif isinstance(items, list) and items:
        out["items"] = to_json_schema(items[0])
    if "additionalProperties" in node and isinstance(node["additionalProperties"], (bool, dict)):
        ap = node["additionalProperties"]
        out["additionalProperties"] = ap if isinstance(ap, bool) else to_json_schema(ap)
    return out


def tool_name(name: str, taken: set[str] | None = None) -> str:
    """A valid OpenAI tool name (``^[a-zA-Z0-9_-]{1,64}$``): dots and other
    characters become underscores; a clash with ``taken`` gets a suffix."""
    safe = _TOOL_NAME.sub("_", name)[:64] or "tool"
    if taken is not None and safe in taken:
        base = safe[:60]
        i = 2
        while f"{base}_{i}" in taken:
            i += 1
        safe = f"{base}_{i}"
    return safe


def to_openai_tools(functions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """BFCL function docs as OpenAI tools; returns (tools, {bfcl name: tool name})."""
    tools: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    taken: set[str] = set()
    for fn in functions:
        original = fn["name"]
        name = tool_name(original, taken)
        taken.add(name)
        names[original] = name
        params = to_json_schema(fn.get("parameters") or {})
        params["type"] = "object"
        params.setdefault("properties", {})
        tools.append(
            {
                "type": "function",
                "function": {"name": name, "description": fn.get("description", ""), "parameters": params},
            }
        )
    return tools, names


def _language_hint(category: str) -> str:
    if category == "simple_java":
        return " Note that the provided function is in Java 8 SDK syntax."
    if category == "simple_javascript":
        return " Note that the provided function is in JavaScript syntax."
    return ""


def _prepare_language_functions(functions: list[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    """BFCL's own function-calling pipeline for Java and JavaScript: every
    argument is passed as a string in the language's syntax, the type named in
    the description (as bfcl_eval's pre-processing does)."""
    lang = "Java" if category == "simple_java" else "JavaScript"
    functions = copy.deepcopy(functions)
    for fn in functions:
        fn["description"] = fn.get("description", "") + _language_hint(category)
        for value in (fn.get("parameters") or {}).get("properties", {}).values():
            t = value.get("type") or "any"
            desc = value.get("description", "")
            if t == "any":
                desc += f" This parameter can be of any type of {lang} object in string representation."
            else:
                desc += f" This is {lang} {t} type parameter in string representation."
            if isinstance(value.get("items"), dict) and t in ("ArrayList", "Array", "array"):
                desc += (
                    f" The list elements are of type {value['items'].get('type')}; "
                    "they are not in string representation."
                )
                del value["items"]
            if lang == "JavaScript" and t == "dict" and "properties" in value:
                desc += (
                    " The dictionary entries have the following schema; they are not in string "
                    f"representation. {json.dumps(value['properties'])}"
                )
                del value["properties"]
            value["description"] = desc
            value["type"] = "string"
    return functions


# -- ground truth -> arguments -----------------------------------------------------


def _resolve(value: Any) -> Any:
    """A value picked from a ground-truth option list: nested dicts hold option
    lists of their own (BFCL's checker reads them that way)."""
    if isinstance(value, dict):
        out = {}
        for k, options in value.items():
            if isinstance(options, list):
                if not options or "" in options:
                    continue  # optional key: leaving it out is acceptable
                out[k] = _resolve(options[0])
            else:
                out[k] = options
        return out
    if isinstance(value, list):
        return [_resolve(v) if isinstance(v, dict) else v for v in value]
    return value


def first_acceptable_args(
    options_by_param: dict[str, list[Any]], required: Iterable[str] = ()
) -> dict[str, Any]:
    """One call's arguments from BFCL's ``{param: [acceptable values]}``: the
    first acceptable value of each; an optional parameter whose options include
    ``""`` (meaning "may be omitted") is left out."""
    required = set(required)
    args: dict[str, Any] = {}
    for param, options in options_by_param.items():
        if not isinstance(options, list) or not options:
            continue
        if "" in options and param not in required:
            continue
        picked = next((o for o in options if o != ""), options[0])
        args[param] = _resolve(picked)
    return args


def _to_source_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def ground_truth_value(value: Any, schema: dict[str, Any]) -> Any:
    """Bring a ground-truth value to the type its JSON schema declares, as a
    model emitting schema-valid JSON would (5 for an integer given 5.0, "3" for a
    string given 3)."""
    t = schema.get("type")
    types = t if isinstance(t, list) else [t] if t else []
    if not types:
        return value
    if "string" in types and not isinstance(value, str) and len(types) == 1:
        return _to_source_string(value)
    if "integer" in types and isinstance(value, float) and value.is_integer() and "number" not in types:
        return int(value)
    if "number" in types and isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    if "integer" in types and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    if "boolean" in types and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if "array" in types:
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [ground_truth_value(v, schema["items"]) for v in value]
    if "object" in types and isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        return {k: ground_truth_value(v, props[k]) if k in props else v for k, v in value.items()}
    return value


