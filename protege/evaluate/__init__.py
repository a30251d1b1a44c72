"""Evaluation and release gate: tool-call-grade metrics with paired bootstrap
intervals, baselines, share of teacher quality, speed and cost, BFCL's own
checker as a cross-check, and the gate that decides whether a student may take
traffic."""

from __future__ import annotations

from protege.evaluate.bootstrap import Interval, Resampler, bootstrap, ratio_interval
from protege.evaluate.gate import GateDecision, GateThresholds, gate
from protege.evaluate.metrics import (
    PRIMARY_METRIC,
    chrf,
    ground_truth_match,
    json_metrics,
    label_metrics,
    rouge_l,
    schema_coerce,
    schema_valid,
    text_metrics,
    tool_call_metrics,
)
from protege.evaluate.predictors import FunctionPredictor, Predictor, TeacherPredictor
from protege.evaluate.records import EvalReport, load_report
from protege.evaluate.runner import EvalConfig, evaluate_task

__all__ = [
    "PRIMARY_METRIC",
    "EvalConfig",
    "EvalReport",
    "FunctionPredictor",
    "GateDecision",
    "GateThresholds",
    "Interval",
    "Predictor",
    "Resampler",
    "TeacherPredictor",
    "bootstrap",
    "chrf",
    "evaluate_task",
    "gate",
    "ground_truth_match",
    "json_metrics",
    "label_metrics",
    "load_report",
    "ratio_interval",
    "rouge_l",
    "schema_coerce",
    "schema_valid",
    "text_metrics",
    "tool_call_metrics",
]
