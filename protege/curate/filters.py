"""Validity filters: which traces are fit to train on.

Each check returns the reason a trace is dropped, or ``None`` to keep it.
Tool calls are checked against the tools the request offered: the name must
be one of them, the arguments valid JSON and valid against the tool's schema.
BFCL-style schemas use Python type names (``dict``, ``float``, ``tuple``,
``any``); they are mapped to JSON Schema before validation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from protege.safejson import json_loads

# Reasons, in the order the checks run.
REASONS: tuple[str, ...] = (
    "error",
    "truncated",
    "empty",
    "unknown_tool",
    "invalid_arguments",
    "schema_violation",
    "invalid_json_output",
    "feedback",
    "exact_duplicate",
)

_TYPE_MAP = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "double": "number",
    "number": "number",
    "int": "integer",
    "integer": "integer",
    "long": "integer",
    "str": "string",
    "string": "string",
    "char": "string",
    "bool": "boolean",
    "boolean": "boolean",
    "list": "array",
    "array": "array",
    "tuple": "array",
    "set": "array",
    "hashmap": "object",
    "null": "null",
    "none": "null",
}
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else")


def normalize_schema(schema: Any) -> Any:
    """A JSON Schema from a possibly BFCL-flavoured one: Python type names
    mapped, ``any`` and unknown types left unconstrained, ``float`` accepting
    integers (JSON has one number type). Never raises."""
    if not isinstance(schema, dict):
        return {} if schema is None or schema is True else schema
    out = dict(schema)
    t = schema.get("type")
    if isinstance(t, str):
        mapped = _TYPE_MAP.get(t.lower())
        if mapped is None:
            out.pop("type")
        else:
            out["type"] = mapped
    elif isinstance(t, list):
        mapped_list = [_TYPE_MAP.get(x.lower()) for x in t if isinstance(x, str)]
        if None in mapped_list or not mapped_list:
            out.pop("type")
        else:
            out["type"] = sorted(set(mapped_list))  # type: ignore[type-var]
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            out[key] = {k: normalize_schema(v) for k, v in schema[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            out[key] = [normalize_schema(v) for v in schema[key]]
    for key in _SCHEMA_ONE:
        if isinstance(schema.get(key), dict):
            out[key] = normalize_schema(schema[key])
    # "required" must be a list of strings; some captured schemas put booleans there.
    if "required" in out and not (
        isinstance(out["required"], list) and all(isinstance(x, str) for x in out["required"])
    ):
        out.pop("required")
    # A "default" or "format" that does not fit is documentation, not a constraint.
    out.pop("format", None)
    if out.get("type") == "array" and isinstance(out.get("items"), list):
        # Draft 4-7 tuple form -> 2020-12 prefixItems.
        out["prefixItems"] = [normalize_schema(v) for v in out.pop("items")]
    return out


@dataclass(kw_only=True)
class FilterConfig:
    """Which validity checks run."""

    check_schema: bool = field(
        default=True, metadata={"help": "Validate tool-call arguments against the tool's schema"}
    )
    feedback_min: float | None = field(
        default=None, metadata={"help": "Keep only traces whose feedback score is at least this"}
    )
    feedback_labels: tuple[str, ...] = field(
        default=(), metadata={"help": "Keep only traces whose feedback label is one of these"}
    )

    @property
    def uses_feedback(self) -> bool:
        return self.feedback_min is not None or bool(self.feedback_labels)


class SchemaCache:
    """Compiled validators, one per distinct tool schema (they repeat on every call)."""

    def __init__(self, max_ids: int = 4096) -> None:
        self._validators: dict[bytes, Any] = {}
        # By object identity: curation shares one parsed tools list between every
        # request that carries it (parts.RequestDecoder), so the offered-tools map
        # and each schema's key are computed once per list, not once per call. The
        # object is kept beside its result so its id cannot be reused meanwhile.
        self._offered: dict[int, tuple[Any, dict[str, Any] | None]] = {}
        self._keys: dict[int, tuple[Any, bytes]] = {}
        self.max_ids = max_ids

    def offered(self, request: dict[str, Any]) -> dict[str, Any] | None:
        tools = request.get("tools")
        if not isinstance(tools, list) or request.get("functions"):
            return _offered(request)
        got = self._offered.get(id(tools))
        if got is None or got[0] is not tools:
            if len(self._offered) >= self.max_ids:
                self._offered.clear()
            got = (tools, _offered(request))
            self._offered[id(tools)] = got
        return got[1]

    def validator(self, parameters: Any) -> Any:
        known = self._keys.get(id(parameters))
        if known is not None and known[0] is parameters:
            key = known[1]
        else:
            key = orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
            if len(self._keys) >= self.max_ids:
                self._keys.clear()
            self._keys[id(parameters)] = (parameters, key)
        got = self._validators.get(key)
        if got is None and key not in self._validators:
            got = _LenientValidator(normalize_schema(parameters))
            self._validators[key] = got
        return got


class _LenientValidator:
    """A JSON Schema validator for which a schema it cannot read constrains
    nothing. The schema itself is checked against the meta-schema (several ms
    per schema, and an agent offers hundreds) only when it rejects a value."""

    def __init__(self, schema: Any) -> None:
        from jsonschema import Draft202012Validator

        self._validator = Draft202012Validator(schema)
        self._sound: bool | None = None

    def is_valid(self, value: Any) -> bool:
        try:
            if self._validator.is_valid(value):
                return True
        except Exception:  # a broken schema (unknown type, bad keyword value) fails while validating
            return True
        if self._sound is None:
            from jsonschema.exceptions import SchemaError

            try:
                type(self._validator).check_schema(self._validator.schema)
                self._sound = True
            except SchemaError:
                self._sound = False
        return not self._sound


def _offered(request: dict[str, Any]) -> dict[str, Any] | None:
    """Offered tools: name -> parameters schema; ``None`` when none were offered."""
    tools = request.get("tools")
    functions = request.get("functions")
    if not tools and not functions:
        return None
    out: dict[str, Any] = {}
    for t in tools or []:
        if isinstance(t, dict):
            fn = t.get("function") if isinstance(t.get("function"), dict) else t
            if isinstance(fn.get("name"), str):
                out[fn["name"]] = fn.get("parameters")
    for fn in functions or []:
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn.get("parameters")
    return out


def _message(response: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(response, dict):
        return None
    choices = response.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return None
    msg = choices[0].get("message")
    return msg if isinstance(msg, dict) else None


def _calls(msg: dict[str, Any]) -> list[dict[str, Any]]:
    calls = [c.get("function") if isinstance(c, dict) else None for c in msg.get("tool_calls") or []]
    if isinstance(msg.get("function_call"), dict):
        calls.append(msg["function_call"])
    return [c if isinstance(c, dict) else {} for c in calls]


def _has_content(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    if isinstance(content, list):
        return any(
            isinstance(p, dict) and (p.get("type") != "text" or str(p.get("text") or "").strip())
            for p in content
        )
    return content is not None


def check_trace(trace: Any, config: FilterConfig, schemas: SchemaCache, feedback: Any = None) -> str | None:
    """The reason to drop ``trace``, or ``None`` to keep it. ``feedback`` is the
    trace's (score, label) or ``None`` when it has none."""
    if trace.status != "ok":
        return "error"
    finish = trace.finish_reason
    if finish == "length":
        return "truncated"
    msg = _message(trace.response)
    if msg is None:
        return "empty"
    calls = _calls(msg)
    if not calls and not _has_content(msg.get("content")):
        return "empty"
    if calls:
        offered = schemas.offered(trace.request) or {}
        for call in calls:
            name = call.get("name")
            if not isinstance(name, str) or name not in offered:
                return "unknown_tool"
            args = call.get("arguments")
            if isinstance(args, str):
                try:
                    args = json_loads(args) if args.strip() else {}
                except ValueError:
                    return "invalid_arguments"
            if not isinstance(args, dict):
                return "invalid_arguments"
            if config.check_schema and isinstance(offered[name], dict):
                validator = schemas.validator(offered[name])
                if validator is not None and not validator.is_valid(args):
                    return "schema_violation"
    elif _wants_json(trace.request):
        try:
            json_loads(msg.get("content") or "")
        except ValueError:
            return "invalid_json_output"
    if config.uses_feedback:
        if feedback is None:
            return "feedback"
        score, label = feedback
        if config.feedback_min is not None and (score is None or score < config.feedback_min):
            return "feedback"
        if config.feedback_labels and label not in config.feedback_labels:
            return "feedback"
    return None


def _wants_json(request: dict[str, Any]) -> bool:
    rf = request.get("response_format")
    return isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")


def feedback_index(
    rows: Iterable[dict[str, Any]],
) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """Latest (score, label) per trace and per session from feedback rows."""
    by_trace: dict[str, tuple[Any, Any]] = {}
    by_session: dict[str, tuple[Any, Any]] = {}
    for r in sorted(rows, key=lambda r: r["created_at"]):
        if r.get("trace_id"):
            by_trace[r["trace_id"]] = (r.get("score"), r.get("label"))
        elif r.get("session_id"):
            by_session[r["session_id"]] = (r.get("score"), r.get("label"))
    return by_trace, by_session
