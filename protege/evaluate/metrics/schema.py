"""JSON-Schema handling shared by every comparison: schema validation and
the coercion a tool's schema allows (``"5"`` is 5 for an integer)."""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from typing import Any

from protege.safejson import json_loads

# --------------------------------------------------------------------------- schemas and coercion

_TYPE_ALIASES = {
    "dict": "object",
    "hashmap": "object",
    "map": "object",
    "object": "object",
    "float": "number",
    "double": "number",
    "number": "number",
    "int": "integer",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "integer": "integer",
    "bool": "boolean",
    "boolean": "boolean",
    "str": "string",
    "string": "string",
    "char": "string",
    "list": "array",
    "tuple": "array",
    "array": "array",
    "arraylist": "array",
    "null": "null",
}


def json_schema_of(schema: Any) -> Any:
    """A tool schema in plain JSON Schema: BFCL-style type names ("dict",
    "float", "tuple", Java's "HashMap"...) mapped to their JSON Schema type,
    unknown ones ("any") dropped so they constrain nothing."""
    if isinstance(schema, dict):
        out = {k: json_schema_of(v) for k, v in schema.items() if k != "type"}
        t = schema.get("type")
        if isinstance(t, str):
            mapped = _TYPE_ALIASES.get(t.lower())
            if mapped:
                out["type"] = mapped
        elif isinstance(t, list):
            mapped_list = [
                _TYPE_ALIASES[x.lower()] for x in t if isinstance(x, str) and x.lower() in _TYPE_ALIASES
            ]
            if mapped_list:
                out["type"] = mapped_list
        if "properties" in schema and isinstance(schema["properties"], dict):
            out["properties"] = {k: json_schema_of(v) for k, v in schema["properties"].items()}
        return out
    if isinstance(schema, list):
        return [json_schema_of(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=2048)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json_schema_of(json.loads(schema_json))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def schema_errors(instance: Any, schema: dict[str, Any] | None, *, limit: int = 3) -> list[str]:
    """How ``instance`` breaks ``schema`` (BFCL types mapped), as messages; empty
    when it is valid, when there is no schema, or when the schema is unusable.
    The gateway validates students' answers with it, so serving and evaluation
    judge validity alike."""
    if not schema:
        return []
    try:
        validator = _validator(json.dumps(schema, sort_keys=True, default=str))
    except Exception:  # an unusable schema cannot reject an answer
        return []
    try:
        return [e.message for e in validator.iter_errors(instance)][:limit]
    except Exception as exc:
        return [f"schema check failed: {exc}"]


def schema_valid(instance: Any, schema: dict[str, Any] | None) -> bool:
    """``instance`` satisfies ``schema`` (BFCL types mapped); no schema: valid."""
    if not schema:
        return True
    try:
        validator = _validator(json.dumps(schema, sort_keys=True, default=str))
    except Exception:  # an unusable schema cannot tell valid from invalid
        return True
    try:
        return validator.is_valid(instance)
    except Exception:
        return False


def _types(schema: dict[str, Any] | None) -> list[str]:
    if not schema:
        return []
    t = schema.get("type")
    names = [t] if isinstance(t, str) else list(t or [])
    return [_TYPE_ALIASES.get(x.lower(), x) for x in names if isinstance(x, str)]


_INT_RE = re.compile(r"^[+-]?\d+$")


def schema_coerce(value: Any, schema: dict[str, Any] | None) -> Any:
    """``value`` read the way the tool's schema says it should be read, by
    protege's rules (docs/evaluation.md; ``bfcl_coerce`` in ``calls.py`` has
    BFCL's stricter ones). Values that do not fit are returned unchanged, so a
    wrong value stays wrong rather than becoming right by accident."""
    if not schema:
        return value
    types = _types(schema)
    enum = schema.get("enum")
    if isinstance(enum, list) and isinstance(value, str):
        key = value.strip().casefold()
        hits = [e for e in enum if isinstance(e, str) and e.strip().casefold() == key]
        if len(hits) == 1:
            return hits[0]
    if isinstance(value, str) and ("array" in types or "object" in types):
        try:
            decoded = json_loads(value)
        except ValueError:
            decoded = None
        if isinstance(decoded, list) and "array" in types or isinstance(decoded, dict) and "object" in types:
            value = decoded
    if isinstance(value, bool):  # never read a boolean as the number 0 or 1
        return value
    if "integer" in types and not ("number" in types and isinstance(value, float)):
        if isinstance(value, str) and _INT_RE.match(value.strip()):
            return int(value.strip())
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if "number" in types:
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                f = float(value.strip())
            except ValueError:
                return value
            return f if math.isfinite(f) else value
    if "boolean" in types and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if "string" in types and isinstance(value, int | float) and types == ["string"]:
        return str(value)
    if isinstance(value, list) and "array" in types:
        items = schema.get("items")
        return [schema_coerce(v, items if isinstance(items, dict) else None) for v in value]
    if isinstance(value, dict) and "object" in types:
        return schema_coerce_args(value, schema)
    return value


def schema_coerce_args(args: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    props = (schema or {}).get("properties") or {}
    return {k: schema_coerce(v, props.get(k)) for k, v in args.items()}


def canon(value: Any) -> Any:
    """A hashable form in which equal JSON values are equal: numbers compare by
    value (5 == 5.0), booleans never equal numbers, dict key order is ignored."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value))
    if isinstance(value, str):
        return ("s", unicodedata.normalize("NFC", value))
    if value is None:
        return ("z",)
    if isinstance(value, list | tuple):
        return ("l", tuple(canon(v) for v in value))
    if isinstance(value, dict):
        return ("d", tuple(sorted((str(k), canon(v)) for k, v in value.items())))
    return ("o", repr(value))


