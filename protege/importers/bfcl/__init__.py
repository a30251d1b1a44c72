"""Berkeley Function Calling Leaderboard (BFCL) entries as the traces an agent
would have produced.

Each BFCL entry becomes what a tool-using agent, backed by a large teacher
model, would have logged: a request with a system prompt, the conversation and
the entry's functions as OpenAI tools, and a ``chat.completion`` built from the
ground truth (first acceptable value of each argument). Multi-turn entries run
their ground-truth calls on BFCL's own API simulators, so every LLM call of the
agent loop is logged with the conversation so far, tool results included.

Only the data files and the multi-turn simulators of ``bfcl_eval`` are used:
its checkers import every model vendor's SDK, which are not installed.
"""

from __future__ import annotations

from protege.importers.bfcl.data import (
    ADDITIONAL_FUNCTION_PROMPT,
    AGENTIC,
    AGENTIC_FORMAT_PROMPT,
    CATEGORY_ORDER,
    DEFAULT_MODEL,
    DEFAULT_SYSTEM_PROMPT,
    GROUPS,
    IRRELEVANT_ANSWER,
    MISSING_FUNCTION_ANSWER,
    MISSING_PARAM_ANSWER,
    MULTI_TURN,
    OTHER,
    SINGLE_TURN,
    BfclError,
    BfclImportConfig,
    Exchange,
    available_categories,
    data_dir,
    offered_suites,
    resolve_categories,
)
from protege.importers.bfcl.schema import (
    first_acceptable_args,
    ground_truth_value,
    to_json_schema,
    to_openai_tools,
    tool_name,
)
from protege.importers.bfcl.traces import (
    CategoryCounts,
    ImportReport,
    Simulators,
    category_entries,
    count_entries,
    entry_exchanges,
    exchange_to_trace,
    import_bfcl,
    iter_bfcl_exchanges,
    parse_call,
    trace_id_for,
)

__all__ = [
    "ADDITIONAL_FUNCTION_PROMPT",
    "AGENTIC",
    "AGENTIC_FORMAT_PROMPT",
    "BfclError",
    "BfclImportConfig",
    "CATEGORY_ORDER",
    "CategoryCounts",
    "DEFAULT_MODEL",
    "DEFAULT_SYSTEM_PROMPT",
    "Exchange",
    "GROUPS",
    "IRRELEVANT_ANSWER",
    "ImportReport",
    "MISSING_FUNCTION_ANSWER",
    "MISSING_PARAM_ANSWER",
    "MULTI_TURN",
    "OTHER",
    "SINGLE_TURN",
    "Simulators",
    "available_categories",
    "category_entries",
    "ground_truth_value",
    "count_entries",
    "data_dir",
    "entry_exchanges",
    "exchange_to_trace",
    "first_acceptable_args",
    "import_bfcl",
    "iter_bfcl_exchanges",
    "offered_suites",
    "parse_call",
    "resolve_categories",
    "to_json_schema",
    "to_openai_tools",
    "tool_name",
    "trace_id_for",
]
