"""Tool calls: student against teacher (schema-aware, order-free parallel
calls, documented defaults) and against BFCL-style ground truth (several
accepted values per argument, BFCL's string standardisation)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protege.evaluate.metrics.schema import _types, canon, schema_coerce_args, schema_valid
from protege.evaluate.metrics.sums import Components, Message, Metric, compute, f1_of, mean_of, ratio_of
from protege.safejson import json_loads

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
    return {k: canon(v) for k, v in schema_coerce_args(args, schema).items()}


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
    """The only coercion BFCL's checker applies (``schema_coerce`` has
    protege's): an integer is a valid ``number`` (float). A string is never a
    number, nor a float an integer."""
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


