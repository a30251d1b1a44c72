"""Quality metrics by output type: tool calls, JSON, closed-set labels, free text.

Each metric is a function of weighted column sums of per-example components
(``*_components``), so a bootstrap resample is one weighted sum. What counts
as the same tool call (schema coercion, enums, defaults, parallel calls):
docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from protege.evaluate.metrics.calls import (
    GROUND_TRUTH_METRICS,
    TOOL_CALL_METRICS,
    Call,
    _add_derived_tool_cols,
    bfcl_canon,
    bfcl_coerce,
    call_valid,
    documented_default,
    ground_truth_components,
    ground_truth_match,
    match_calls,
    tool_call_components,
    tool_call_metrics,
    tool_calls_of,
    tool_schemas,
)
from protege.evaluate.metrics.outputs import (
    JSON_METRICS,
    LABEL_METRICS,
    chrf,
    embedding_similarities,
    json_components,
    json_metrics,
    label_components,
    label_metrics,
    normalize_label,
    parse_json_content,
    response_schema,
    rouge_l,
    text_components,
    text_metrics,
    text_metrics_for,
)
from protege.evaluate.metrics.schema import (
    canon,
    json_schema_of,
    schema_coerce,
    schema_coerce_args,
    schema_errors,
    schema_valid,
)
from protege.evaluate.metrics.sums import (
    OUTPUT_TYPES,
    Components,
    Message,
    Metric,
    compute,
    f1_of,
    mean_of,
    per_example,
    ratio_of,
    weighted_sums,
)

__all__ = [
    "JSON_METRICS",
    "LABEL_METRICS",
    "TOOL_CALL_METRICS",
    "Call",
    "Components",
    "GROUND_TRUTH_METRICS",
    "Message",
    "Metric",
    "OUTPUT_TYPES",
    "PRIMARY_METRIC",
    "VALIDITY_METRIC",
    "bfcl_canon",
    "bfcl_coerce",
    "call_valid",
    "canon",
    "chrf",
    "components_for",
    "compute",
    "documented_default",
    "embedding_similarities",
    "f1_of",
    "ground_truth_components",
    "ground_truth_match",
    "json_components",
    "json_metrics",
    "json_schema_of",
    "label_components",
    "label_metrics",
    "match_calls",
    "mean_of",
    "normalize_label",
    "parse_json_content",
    "per_example",
    "ratio_of",
    "response_schema",
    "rouge_l",
    "schema_coerce",
    "schema_coerce_args",
    "schema_errors",
    "schema_valid",
    "text_components",
    "text_metrics",
    "text_metrics_for",
    "tool_call_components",
    "tool_call_metrics",
    "tool_calls_of",
    "tool_schemas",
    "weighted_sums",
]


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
