"""Schema-constrained decoding of a whole answer, with llguidance.

While a student writes a tool call it may only write a name the request
offers and arguments valid against that tool's JSON Schema (types, required
properties, enums, nesting); ``tool_choice`` and ``response_format`` are
enforced the same way. The grammar follows the student's trained format
(``protege.models.toolcall``): optional free text, then one
``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` block per
call, JSON written with ``json.dumps``'s separators, so a constrained answer is
token for token what training taught wherever the student was already right.

llguidance (the engine behind vLLM's and llama.cpp's structured outputs)
compiles a grammar in milliseconds and computes a token mask in a fraction of
a millisecond on CPU; ``bench/constrain.py`` compares it with the names-only
constraint. A request whose schema llguidance cannot compile is decoded with
the names-only constraint instead (``protege.models.constrain``), and counted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

log = logging.getLogger("protege.models.grammar")

MODES = ("schema", "names", "off")

# Keys of a JSON Schema that say nothing about which values are valid; dropped
# so that grammars stay small (BFCL's descriptions are most of a tool's text).
_NOTES = ("description", "title", "examples", "$comment")
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

stats: dict[str, float] = {"compiled": 0, "fallback": 0, "mask_seconds": 0.0, "masks": 0}

# "<" followed by anything but the rest of "<tool_call>", one byte past the
# first difference.
_OPEN = "tool_call>"
_NOT_A_CALL = "<(?:" + "|".join(_OPEN[:i] + f"[^{_OPEN[i]}<]" for i in range(len(_OPEN))) + ")"


def _lean(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {}
        for k, v in schema.items():
            if k in _NOTES and not isinstance(v, dict):
                continue
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: _lean(sub) for name, sub in v.items()}
            else:
                out[k] = _lean(v)
        return out
    if isinstance(schema, list):
        return [_lean(v) for v in schema]
    return schema


def _parameters(fn: dict[str, Any]) -> dict[str, Any]:
    params = fn.get("parameters")
    if not isinstance(params, dict) or not params:
        return {"type": "object", "properties": {}}
    params = _lean(params)
    if "type" not in params:
        params = {**params, "type": "object"}
    declared = set(params.get("properties") or {})
    if "additionalProperties" not in params and set(params.get("required") or []) <= declared:
        # A tool takes the arguments it declares: an invented one is an error
        # (BFCL's checker and OpenAI's strict mode agree).
        params = {**params, "additionalProperties": False}
    return params


def _call_schema(fn: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": str(fn["name"])}, "arguments": _parameters(fn)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _functions(tools: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for t in tools or []:
        fn = (t.get("function") if isinstance(t, dict) else None) or {}
        if isinstance(fn, dict) and fn.get("name"):
            out.append(fn)
    return out


def _forced_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function") or {}
        if isinstance(fn, dict) and fn.get("name"):
            return str(fn["name"])
    return None


def _response_schema(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return _lean(schema) if isinstance(schema, dict) else {"type": "object"}
    return None


def _json_rule(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": _JSON_STYLE}, ensure_ascii=False)


def answer_grammar(
    tools: Sequence[dict[str, Any]] | None,
    tool_choice: Any = None,
    response_format: Any = None,
    parallel_tool_calls: Any = None,
) -> str | None:
    """The Lark grammar (llguidance dialect) of every answer the request
    allows, or None when it allows any text."""
    fns = _functions(tools)
    forced = _forced_name(tool_choice)
    if forced is not None:
        fns = [f for f in fns if f["name"] == forced]
    if tool_choice == "none" or not fns:
        schema = _response_schema(response_format)
        return None if schema is None else f"start: body\nbody: {_json_rule(schema)}\n"
    body = _json_rule({"anyOf": [_call_schema(f) for f in fns]} if len(fns) > 1 else _call_schema(fns[0]))
    calls = "call" if parallel_tool_calls is False else 'call ("\\n" call)*'
    start = "calls" if tool_choice == "required" or forced is not None else "text | text? calls"
    return (
        f"start: {start}\n"
        f"calls: {calls}\n"
        'call: "<tool_call>\\n" body "\\n</tool_call>"\n'
        f"body: {body}\n"
        # Free text may say anything but open a call, which must follow the
        # grammar. The lexer does not backtrack, so text is cut at every "<"
        # into pieces that cannot begin "<tool_call>" (nor "<<"); the parser
        # then tells a piece from a call by the bytes that follow.
        "text: (CHUNK | LT)+\n"
        "CHUNK: /[^<]+/\n"
        f"LT: /{_NOT_A_CALL}/\n"
    )


def request_grammar(request: dict[str, Any] | None, tools: Any = None) -> str | None:
    request = request or {}
    return answer_grammar(
        request.get("tools") if tools is None else tools,
        request.get("tool_choice"),
        request.get("response_format"),
        request.get("parallel_tool_calls"),
    )


_TOKENIZERS: dict[int, tuple[Any, Any]] = {}


def stop_token_id(tokenizer: Any) -> int:
    """The token that ends a student's turn (ChatML's ``<|im_end|>`` where the
    vocabulary has it: every student is trained to end on it)."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
        return tid
    return int(tokenizer.eos_token_id)


def ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a ``transformers`` tokenizer (built once per tokenizer: ~0.3 s)."""
    key = id(tokenizer)
    hit = _TOKENIZERS.get(key)
    if hit is None or hit[0] is not tokenizer:
        import llguidance.hf

        hit = (tokenizer, llguidance.hf.from_tokenizer(tokenizer, eos_token=stop_token_id(tokenizer)))
        _TOKENIZERS[key] = hit
    return hit[1]


@lru_cache(maxsize=256)
def _compiled(grammar: str) -> str | None:
    import llguidance

    try:
        g = llguidance.LLMatcher.grammar_from_lark(grammar)
        msg = llguidance.LLMatcher.validate_grammar(g)  # '' when valid
    except Exception as exc:  # malformed grammar text
        msg, g = str(exc) or type(exc).__name__, None
    if msg:
        log.warning("protege: answer grammar rejected (%s); names-only constraint instead", str(msg)[:200])
        return None
    return g


def compile_grammar(grammar: str | None) -> Any:
    """The compiled grammar, or None (no grammar, or one llguidance cannot compile)."""
    if grammar is None:
        return None
    g = _compiled(grammar)
    stats["compiled" if g is not None else "fallback"] += 1
    return g


def schema_constraint(tokenizer: Any, grammars: Sequence[Any], prompt_width: int) -> Any:
    """A ``transformers`` logits processor for a batch: row ``i`` may only
    write what compiled grammar ``grammars[i]`` allows (None: anything).
    ``prompt_width`` is where generated tokens start in ``input_ids``."""
    import llguidance
    import llguidance.torch as lt
    import torch
    from transformers import LogitsProcessor

    llt = ll_tokenizer(tokenizer)
    vocab = llt.vocab_size
    stop = stop_token_id(tokenizer)
    matchers = [None if g is None else llguidance.LLMatcher(llt, g) for g in grammars]

    class _Schema(LogitsProcessor):
        def __init__(self) -> None:
            self.mask = lt.allocate_token_bitmask(max(1, len(matchers)), vocab)
            self.violations = 0

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            try:
                return self._mask(input_ids, scores)
            finally:
                stats["mask_seconds"] += time.perf_counter() - t0
                stats["masks"] += 1

        def _mask(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            step = input_ids.shape[1] - prompt_width
            rows: list[int] = []
            ends: list[int] = []
            for row, m in enumerate(matchers):
                if m is None or row >= scores.shape[0]:
                    continue
                if step > 0 and not m.is_stopped():
                    m.consume_token(int(input_ids[row, -1]))
                if m.is_error():
                    # Only an outside processor can force a token the mask refused.
                    self.violations += 1
                    matchers[row] = None
                    continue
                if m.is_stopped():
                    # The answer is complete (or the row already ended and
                    # what follows is padding): only the end of turn remains.
                    ends.append(row)
                    continue
                lt.fill_next_token_bitmask(m, self.mask, row)
                rows.append(row)
            if not rows and not ends:
                return scores
            scores = scores.clone()
            if rows:
                idx = torch.tensor(rows, dtype=torch.long)
                sub = scores[idx.to(scores.device), :vocab].float()
                # The mask is filled on the CPU; the scores may sit on a GPU.
                lt.apply_token_bitmask_inplace(sub, self.mask[idx].to(sub.device))
                scores[idx, :vocab] = sub.to(scores.dtype)
                if scores.shape[1] > vocab:  # padded output layer: never a real token
                    scores[idx, vocab:] = float("-inf")
            for row in ends:
                keep = scores[row, stop].clone()
                scores[row] = float("-inf")
                scores[row, stop] = keep
            return scores

    return _Schema()
