"""Cross-check of protege's exact call match with BFCL's own AST checker
(``bfcl_eval``): on BFCL-derived tasks the two must agree on every example, and
each disagreement is listed with its cause. ``load_checker`` imports the
checker without the vendor SDKs it would pull in (docs/evaluation.md, BFCL's
own checker, says how)."""

from __future__ import annotations

import functools
import importlib
import itertools
import json
import re
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from protege.evaluate.metrics import ground_truth_match, tool_calls_of

_MODEL_CONFIG = "bfcl_eval.constants.model_config"
_CHECKER = "bfcl_eval.eval_checker.ast_eval.ast_checker"
# Any name: with the stand-in mapping every model keeps dotted names.
_MODEL_NAME = "protege-student"


class CheckerUnavailable(RuntimeError):
    """BFCL's checker cannot be imported here (the reason says why)."""


class _NoUnderscoreToDot(dict):
    def __missing__(self, key: str) -> Any:
        return types.SimpleNamespace(underscore_to_dot=False)


@functools.lru_cache(maxsize=1)
def load_checker() -> tuple[Any, Any, str]:
    """(ast_checker function, Language enum, model name to pass)."""
    try:
        importlib.import_module("bfcl_eval")
    except ImportError as exc:
        raise CheckerUnavailable(
            f"bfcl_eval is not installed ({exc}); pip install bfcl-eval --no-deps"
        ) from None
    if _CHECKER in sys.modules:
        mod = sys.modules[_CHECKER]
    else:
        stub_added = False
        if _MODEL_CONFIG not in sys.modules:
            stub = types.ModuleType(_MODEL_CONFIG)
            stub.MODEL_CONFIG_MAPPING = _NoUnderscoreToDot()  # type: ignore[attr-defined]
            sys.modules[_MODEL_CONFIG] = stub
            stub_added = True
        try:
            mod = importlib.import_module(_CHECKER)
        except ImportError as exc:
            raise CheckerUnavailable(f"cannot import BFCL's AST checker: {exc}") from None
        finally:
            if stub_added:
                sys.modules.pop(_MODEL_CONFIG, None)
                constants = sys.modules.get("bfcl_eval.constants")
                if constants is not None and isinstance(
                    getattr(constants, "model_config", None), types.ModuleType
                ):
                    if getattr(constants.model_config, "__file__", None) is None:
                        delattr(constants, "model_config")
    from bfcl_eval.constants.enums import Language

    model_name = _MODEL_NAME
    mapping = getattr(mod, "MODEL_CONFIG_MAPPING", {})
    if not isinstance(mapping, _NoUnderscoreToDot):
        # The real table: pick a model whose names keep their dots.
        for key, cfg in mapping.items():
            if "_" not in key and not getattr(cfg, "underscore_to_dot", True):
                model_name = key.replace("/", "_")
                break
    return mod.ast_checker, Language, model_name


def checker_status() -> str | None:
    """None when the checker imports, else the reason it does not."""
    try:
        load_checker()
    except CheckerUnavailable as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- BFCL data and names


def bfcl_meta(row: dict[str, Any]) -> dict[str, Any] | None:
    meta = (row.get("meta") or {}).get("bfcl")
    return meta if isinstance(meta, dict) else None


def _data_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise CheckerUnavailable("bfcl_eval is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@functools.lru_cache(maxsize=64)
def _bfcl_file(category: str, answers: bool) -> dict[str, dict[str, Any]]:
    d = _data_dir()
    d = d / "possible_answer" if answers else d
    pattern = re.compile(rf"BFCL_v(\d+)_{re.escape(category)}\.json")
    paths = sorted(
        (p for p in d.glob("BFCL_v*.json") if pattern.fullmatch(p.name)),
        key=lambda p: int(pattern.fullmatch(p.name).group(1)),
    )  # type: ignore[union-attr]
    if not paths:
        return {}
    out = {}
    with paths[-1].open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                entry = json.loads(line)
                out[entry["id"]] = entry
    return out


def category_of(bfcl_id: str, meta: dict[str, Any] | None = None) -> str:
    """BFCL's own category of an example (the importer may file it under another name)."""
    if meta and meta.get("source_category"):
        return str(meta["source_category"])
    if meta and meta.get("category"):
        return str(meta["category"])
    return re.sub(r"_\d+(?:-\d+)*$", "", bfcl_id)


def bfcl_functions(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The example's function descriptions in BFCL's own format (its type names,
    its dotted names): from the trace's meta, else from the package data."""
    meta = bfcl_meta(row) or {}
    if meta.get("functions"):
        return list(meta["functions"])
    if not meta.get("id"):
        return None
    entry = _bfcl_file(category_of(meta["id"], meta), False).get(meta["id"])
    return list(entry["function"]) if entry else None


def is_call_ground_truth(gt: Any) -> bool:
    """Single-turn AST ground truth: ``[{function: {arg: [acceptable values]}}]``
    (multi-turn entries hold call strings per turn, agentic ones final answers)."""
    return isinstance(gt, list) and all(
        isinstance(e, dict) and len(e) == 1 and isinstance(next(iter(e.values())), dict) for e in gt
    )


def call_ground_truth(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The row's ground truth when it is in the single-turn AST form, else None."""
    meta = bfcl_meta(row) or {}
    gt = meta.get("ground_truth")
    if gt is None or "multi_turn" in category_of(str(meta.get("id", "")), meta):
        return None
    return list(gt) if is_call_ground_truth(gt) else None


def bfcl_ground_truth(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    meta = bfcl_meta(row) or {}
    if meta.get("ground_truth") is not None:
        return call_ground_truth(row)
    if not meta.get("id"):
        return None
    entry = _bfcl_file(category_of(meta["id"], meta), True).get(meta["id"])
    return list(entry["ground_truth"]) if entry else None


def openai_name(name: str) -> str:
    """BFCL's dotted function names as OpenAI accepts them (^[a-zA-Z0-9_-]{1,64}$)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]


def name_map_for(row: dict[str, Any]) -> dict[str, str]:
    """Original (BFCL) function name -> the tool name offered in the request."""
    meta = bfcl_meta(row) or {}
    # The importer records {tool name: BFCL name} for renamed tools only.
    given = meta.get("tool_names") or meta.get("name_map") or meta.get("names")
    offered = {((t or {}).get("function") or {}).get("name") for t in row.get("tools") or []}
    if isinstance(given, dict) and given:
        # Accept either direction: whichever side holds the offered names is the value.
        if set(given) & offered and not set(given.values()) & offered:
            return {v: k for k, v in given.items()}
        return dict(given)
    names: set[str] = set()
    for f in bfcl_functions(row) or []:
        names.add(f["name"])
    for entry in meta.get("ground_truth") or []:
        names.update(entry)
    out = {}
    for n in names:
        if n not in offered and openai_name(n) in offered:
            out[n] = openai_name(n)
    return out


def bfcl_output(pred: dict[str, Any] | None, name_map: dict[str, str]) -> list[dict[str, Any]]:
    """A predicted assistant message in BFCL's decoded format:
    ``[{original_function_name: {arg: value}}]``."""
    back = {v: k for k, v in name_map.items()}
    out = []
    for c in tool_calls_of(pred):
        out.append({back.get(c.name, c.name): c.args if c.args is not None else {}})
    return out


# --------------------------------------------------------------------------- the cross-check


def _standardize(s: str) -> str:
    return re.sub(r"[ \,\.\/\-\_\*\^]", "", s).lower().replace("'", '"')


def _error_types(result: Any) -> set[str]:
    """Every error type in a checker result, the parallel checker's per-call
    sub-errors included."""
    out: set[str] = set()
    if isinstance(result, dict):
        for key in ("error_type", "sub_error_type"):
            if isinstance(result.get(key), str):
                out.add(result[key])
        for v in result.values():
            if isinstance(v, dict | list):
                out |= _error_types(v)
    elif isinstance(result, list):
        for v in result:
            out |= _error_types(v)
    return out


def _lenient_string_hit(output: list[dict[str, Any]], gt: list[dict[str, Any]]) -> bool:
    def strings(x: Any) -> list[str]:
        if isinstance(x, str):
            return [x]
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        if isinstance(x, list):
            return [s for v in x for s in strings(v)]
        return []

    ours = set(strings(output))
    accepted = {a for a in strings(gt) if a != ""}
    return any(v != a and _standardize(v) == _standardize(a) for v in ours for a in accepted)


def _explain(
    ours: bool,
    result: dict[str, Any],
    output: list[dict[str, Any]],
    gt: list[dict[str, Any]],
    recheck: Callable[[list[dict[str, Any]]], bool],
) -> str:
    types_ = _error_types(result)
    errors = "; ".join(str(e) for e in result.get("error") or [] if isinstance(e, str))
    if not ours and result.get("valid"):
        if _lenient_string_hit(output, gt):
            return (
                "BFCL's lenient string matching: it ignores case, spaces and the characters ,./-_*^ "
                "in string values; protege compares non-enum strings exactly"
            )
        return "BFCL accepts and protege does not (unclassified)"
    if ours and not result.get("valid"):
        if any(t.startswith("type_error") for t in types_):
            return (
                'protege coerces values to the parameter\'s schema type ("5" or 5.0 for an integer); '
                f"BFCL requires the exact Python type ({errors})"
            )
        if any("cannot_find_match" in t for t in types_) and 1 < len(output) <= 6:
            if any(recheck(list(p)) for p in itertools.permutations(output)):
                return (
                    "BFCL pairs parallel calls greedily (the first acceptable call takes each answer) and "
                    "misses the valid pairing that protege's optimal matching finds; the same calls in "
                    "another order pass BFCL"
                )
        if "value_error:others" in types_:
            return (
                "the ground truth's value does not fit the tool's declared type; protege reads both "
                f"sides through the schema, BFCL compares the raw values ({errors})"
            )
        return f"protege accepts and BFCL does not: {', '.join(sorted(types_))} ({errors})"
    return ""


def cross_check(rows: Sequence[dict[str, Any]], preds: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Per-example agreement between protege's ground-truth exact call match and
    BFCL's AST checker, over the rows that carry BFCL ids."""
    try:
        ast_checker, Language, model_name = load_checker()
    except CheckerUnavailable as exc:
        return {"available": False, "reason": str(exc)}
    compared = agree = bfcl_pass = ours_pass = 0
    skipped: dict[str, int] = {}
    disagreements: list[dict[str, Any]] = []
    for row, pred in zip(rows, preds, strict=True):
        meta = bfcl_meta(row)
        if not meta or not meta.get("id"):
            skipped["not a BFCL example"] = skipped.get("not a BFCL example", 0) + 1
            continue
        category = category_of(meta["id"], meta)
        if (
            "java" in category
            or "multi_turn" in category
            or "relevance" in category
            and "irrelevance" not in category
        ):
            why = f"category {category} not compared (non-Python or not single-turn AST)"
            skipped[why] = skipped.get(why, 0) + 1
            continue
        gt = bfcl_ground_truth(row)
        functions = bfcl_functions(row)
        if gt is None or functions is None:
            skipped["no ground truth"] = skipped.get("no ground truth", 0) + 1
            continue
        names = name_map_for(row)
        output = bfcl_output(pred, names)
        ours = ground_truth_match(pred, gt, row.get("tools"), names)
        if "irrelevance" in category or not gt:
            # BFCL's rule for irrelevance: right when the model makes no call.
            result = {"valid": not output, "error": [] if not output else ["called a function"]}
        else:
            try:
                result = ast_checker(functions, output, gt, Language.PYTHON, category, model_name)
            except Exception as exc:  # the checker crashing on an answer is a "no"
                result = {
                    "valid": False,
                    "error": [f"checker raised {type(exc).__name__}: {exc}"],
                    "error_type": "checker_exception",
                }

        def recheck(out: list[dict[str, Any]], functions=functions, gt=gt, category=category) -> bool:
            try:
                return bool(
                    ast_checker(functions, out, gt, Language.PYTHON, category, model_name).get("valid")
                )
            except Exception:
                return False

        compared += 1
        theirs = bool(result.get("valid"))
        bfcl_pass += theirs
        ours_pass += ours
        if theirs == ours:
            agree += 1
        else:
            disagreements.append(
                {
                    "id": meta["id"],
                    "protege": ours,
                    "bfcl": theirs,
                    "bfcl_error": result.get("error"),
                    "explanation": _explain(ours, result, output, gt, recheck),
                }
            )
    return {
        "available": True,
        "compared": compared,
        "agree": agree,
        "agreement": agree / compared if compared else None,
        "bfcl_accuracy": bfcl_pass / compared if compared else None,
        "protege_accuracy": ours_pass / compared if compared else None,
        "disagreements": disagreements,
        "skipped": skipped,
    }


# --------------------------------------------------------------------------- building rows (tests, tools)


def _first_value(accepted: list[Any]) -> Any:
    """The first acceptable value, with BFCL's nested ground truth (objects whose
    values are lists of acceptable values) resolved the same way."""
    a = accepted[0]
    if isinstance(a, dict) and all(isinstance(v, list) for v in a.values()):
        return {k: _first_value(v) for k, v in a.items() if v and v[0] != ""}
    if (
        isinstance(a, list)
        and a
        and all(isinstance(x, dict) and all(isinstance(v, list) for v in x.values()) for x in a)
    ):
        return [{k: _first_value(v) for k, v in x.items() if v and v[0] != ""} for x in a]
    return a


def bfcl_row(entry: dict[str, Any], answer: dict[str, Any], category: str | None = None) -> dict[str, Any]:
    """A dataset row (docs/CONTRACTS.md) from one BFCL question and its answer,
    converted as an importer would: OpenAI tools with JSON Schema types, names
    made OpenAI-safe, the teacher's answer taken from the first acceptable value
    of each argument."""
    from protege.evaluate.metrics import json_schema_of

    tools = [
        {
            "type": "function",
            "function": {
                "name": openai_name(f["name"]),
                "description": f.get("description", ""),
                "parameters": json_schema_of(f.get("parameters") or {}),
            },
        }
        for f in entry["function"]
    ]
    calls = []
    for i, gt in enumerate(answer.get("ground_truth") or []):
        name, accepted = next(iter(gt.items()))
        args = {k: _first_value(v) for k, v in accepted.items() if v and v[0] != ""}
        calls.append(
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": openai_name(name), "arguments": json.dumps(args)},
            }
        )
    question = (
        entry["question"][0]
        if entry["question"] and isinstance(entry["question"][0], list)
        else entry["question"]
    )
    return {
        "id": entry["id"],
        "messages": list(question),
        "tools": tools,
        "tool_choice": "auto",
        "response_format": None,
        "completion": {"role": "assistant", "content": None, "tool_calls": calls or None},
        "meta": {
            "bfcl": {
                "id": entry["id"],
                "category": category or category_of(entry["id"]),
                "ground_truth": answer.get("ground_truth") or [],
                "name_map": {f["name"]: openai_name(f["name"]) for f in entry["function"]},
            }
        },
    }


def bfcl_rows(category: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows for the first ``limit`` examples of a BFCL category shipped with bfcl_eval."""
    questions = _bfcl_file(category, False)
    answers = _bfcl_file(category, True)
    out = []
    for qid, entry in questions.items():
        if limit is not None and len(out) >= limit:
            break
        out.append(bfcl_row(entry, answers.get(qid, {"ground_truth": []}), category))
    return out
