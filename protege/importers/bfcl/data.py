"""BFCL's data as shipped in ``bfcl_eval``: categories, entries, possible
answers, function docs, and the prompts an agent would use."""


from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from protege.safejson import json_loads

DEFAULT_MODEL = "gpt-4o"

DEFAULT_SYSTEM_PROMPT = (
    "You are a capable assistant working inside an application that gives you tools. "
    "Use a tool whenever it helps you fulfil the user's request, with arguments taken "
    "from the request and from earlier tool results; never invent values the user did "
    "not provide. When a request needs several calls, make them, one after another or in "
    "parallel when they are independent. If none of the tools fits the request, or a "
    "required detail is missing, say so briefly instead of calling a tool. Once the "
    "request is fulfilled, reply to the user concisely."
)

# BFCL's own instruction for its agentic categories (memory, web search).
AGENTIC_FORMAT_PROMPT = (
    "For your final answer to the user, you must respond in this format: "
    "{'answer': A short and precise answer to the question, 'context': A brief explanation "
    "of how you arrived at this answer or why it is correct}. If you do not know the answer, "
    "respond with {'answer': 'I do not know', 'context': 'I do not know'}. If you think the "
    "question cannot be properly answered, response with {'answer': 'I cannot answer this "
    "question', 'context': A short reason explaining why this question cannot be answered}."
)

# BFCL's user message when held-out functions become available (miss_func).
ADDITIONAL_FUNCTION_PROMPT = "I have updated some more functions you can choose from. What about now?"

IRRELEVANT_ANSWER = (
    "I can't help with that using the tools available here: none of them does what you "
    "are asking for."
)
MISSING_FUNCTION_ANSWER = (
    "I can't do that with the tools I currently have: none of them covers this step."
)
MISSING_PARAM_ANSWER = (
    "I need a bit more information before I can do that. Could you give me the missing "
    "details?"
)

# Multi-turn API classes -> function docs and simulator modules (BFCL's layout).
_FUNC_DOC_FILES = {
    "GorillaFileSystem": "gorilla_file_system.json",
    "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json",
    "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
    "WebSearchAPI": "web_search.json",
    "MemoryAPI": "memory_kv.json",
}
_SIMULATOR_MODULE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code."
_SIMULATOR_FILES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
_STATELESS_CLASSES = {"MathAPI"}

# Category kinds. Order is the canonical order (also used for trace timestamps).
SINGLE_TURN = (
    "simple_python",
    "simple_java",
    "simple_javascript",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
    "live_relevance",
)
MULTI_TURN = (
    "multi_turn_base",
    "multi_turn_miss_func",
    "multi_turn_miss_param",
    "multi_turn_long_context",
)
AGENTIC = ("memory", "web_search")
OTHER = ("format_sensitivity",)
CATEGORY_ORDER = SINGLE_TURN + MULTI_TURN + AGENTIC + OTHER

GROUPS: dict[str, tuple[str, ...]] = {
    "all": CATEGORY_ORDER,
    "single_turn": SINGLE_TURN,
    "non_live": tuple(c for c in SINGLE_TURN if not c.startswith("live_")),
    "live": tuple(c for c in SINGLE_TURN if c.startswith("live_")),
    "multi_turn": MULTI_TURN,
    "agentic": AGENTIC,
}

# BFCL parameter types -> JSON Schema types. "any" means no constraint.
_TYPE_MAP = {
    "integer": "integer",
    "int": "integer",
    "number": "number",
    "float": "number",
    "double": "number",
    "string": "string",
    "str": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "dict": "object",
    "object": "object",
    "byte": "integer",
    "short": "integer",
    "long": "integer",
    "Bigint": "integer",
    "char": "string",
    "String": "string",
    "Boolean": "boolean",
    "ArrayList": "array",
    "Array": "array",
    "Set": "array",
    "Queue": "array",
    "Stack": "array",
    "HashMap": "object",
    "Hashtable": "object",
}
_KEEP_KEYS = (
    "description",
    "enum",
    "default",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "examples",
)
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")

# Imported traces get deterministic ids whose time part is this logical clock,
# so re-importing never duplicates and ids sort in conversation order.
_ID_EPOCH_S = 1_735_689_600  # 2025-01-01T00:00:00Z
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class BfclError(ValueError):
    """Bad category name, or bfcl_eval is missing."""


class Exchange(NamedTuple):
    """One logged LLM call: the request, the teacher's response, trace metadata."""

    request: dict[str, Any]
    response: dict[str, Any]
    meta: dict[str, Any]


@dataclass(kw_only=True)
class BfclImportConfig:
    """How BFCL entries are rendered as agent traffic."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "teacher model named in requests and responses"})
    system_prompt: str = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "system prompt the simulated agent sends"}
    )
    limit: int | None = field(default=None, metadata={"help": "first N entries per category"})
    seed: int = field(default=0, metadata={"help": "seed for the latency estimates"})
    suites: tuple[str, ...] = field(
        default=(),
        metadata={"help": "multi-turn: the API suites the agent offers in every conversation (default: the "
                  "entry's own); an agent's tool set does not change with the question"},
    )


def offered_suites(entry: dict[str, Any], suites: tuple[str, ...] = ()) -> list[str]:
    """The API suites whose tools a multi-turn conversation offers: the agent's
    (``suites``) when given, which must hold the entry's own, else the entry's."""
    own = list(entry.get("involved_classes") or [])
    if not suites:
        return own
    missing = [c for c in own if c not in suites]
    if missing:
        raise ValueError(f"entry {entry.get('id')} needs {', '.join(missing)}, which the agent's suites "
                         f"({', '.join(suites)}) do not offer")
    return list(suites)


# -- data ----------------------------------------------------------------------


def data_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BfclError("bfcl_eval is not installed: pip install --no-deps bfcl-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json_loads(line) for line in fh if line.strip()]


@lru_cache(maxsize=64)
def _entries(category: str) -> tuple[dict[str, Any], ...]:
    return tuple(_read_jsonl(data_dir() / f"BFCL_v4_{category}.json"))


@lru_cache(maxsize=64)
def _answers(category: str) -> dict[str, Any]:
    path = data_dir() / "possible_answer" / f"BFCL_v4_{category}.json"
    if not path.exists():
        return {}
    return {e["id"]: e for e in _read_jsonl(path)}


@lru_cache(maxsize=16)
def _func_doc(class_name: str) -> tuple[dict[str, Any], ...]:
    return tuple(_read_jsonl(data_dir() / "multi_turn_func_doc" / _FUNC_DOC_FILES[class_name]))


def available_categories() -> list[str]:
    """The categories whose data this bfcl_eval ships, in canonical order."""
    root = data_dir()
    shipped = {p.name[len("BFCL_v4_") : -len(".json")] for p in root.glob("BFCL_v4_*.json")}
    known = [c for c in CATEGORY_ORDER if c in shipped]
    return known + sorted(shipped - set(known))


def resolve_categories(names: Iterable[str]) -> list[str]:
    """Expand group names (all, live, multi_turn, ...) and check every name."""
    valid = available_categories()
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for name in names:
        key = name.strip().removeprefix("BFCL_v4_").removesuffix(".json")
        found = [c for c in GROUPS[key] if c in valid] if key in GROUPS else [key] if key in valid else None
        if found is None:
            raise BfclError(
                f"unknown BFCL category {name!r}; valid: {', '.join(valid)} "
                f"(or a group: {', '.join(GROUPS)})"
            )
        out.extend(c for c in found if c not in out)
    if not out:
        raise BfclError(f"no BFCL category given; valid: {', '.join(valid)}")
    return out


