"""protege: turn an agent's LLM calls into small specialised models.

The public API is listed in ``__all__``; everything else is internal. Names
load on first use, so ``import protege`` stays fast (no torch, no
transformers) for the CLI and the gateway.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it, one line per pipeline stage.
_LAZY = {
    # capture and store
    "Trace": "protege.store.records",
    "Feedback": "protege.store.records",
    "TraceStore": "protege.store.db",
    "open_store": "protege.database",
    "StoreError": "protege.store.db",
    "CaptureWriter": "protege.capture.writer",
    "WriterConfig": "protege.capture.writer",
    "StreamAccumulator": "protege.capture.stream",
    "build_trace": "protege.capture.extract",
    "wrap": "protege.capture.wrap",
    "feedback": "protege.capture.wrap",
    "trace_stats": "protege.stats",
    "create_app": "protege.gateway.app",
    "GatewayConfig": "protege.gateway.config",
    "import_bfcl": "protege.importers.bfcl",
    # curate and tasks
    "curate": "protege.curate",
    "iter_curated": "protege.curate",
    "Scrubber": "protege.curate",
    "redact_trace": "protege.curate",
    "discover_tasks": "protege.tasks",
    "TaskIndex": "protege.tasks",
    "fingerprint": "protege.tasks",
    "rename_task": "protege.tasks.manage",
    "merge_tasks": "protege.tasks.manage",
    "split_task": "protege.tasks.manage",
    # datasets, models, training
    "build_dataset": "protege.datasets",
    "load_dataset": "protege.datasets",
    "DatasetConfig": "protege.datasets",
    "load_catalog": "protege.models.catalog",
    "load_base": "protege.models.loader",
    "select_models": "protege.models.select",
    "train_adapter": "protege.train",
    "TrainConfig": "protege.train",
    "Registry": "protege.registry",
    # evaluation, routing, serving, the loop
    "evaluate_task": "protege.evaluate",
    "gate": "protege.evaluate",
    "Router": "protege.router",
    "set_route": "protege.router",
    "validate_answer": "protege.router",
    "EmbeddedEngine": "protege.engines",
    "OpenAICompatEngine": "protege.engines",
    "run_flywheel": "protege.flywheel",
    "FlywheelConfig": "protege.flywheel",
    "ReplayIndex": "protege.teacher",
    "simulate_bfcl": "protege.simulate",
    "collect_report": "protege.report",
    "run_demo": "protege.demo",
}

__all__ = [
    "CaptureWriter",
    "DatasetConfig",
    "EmbeddedEngine",
    "Feedback",
    "FlywheelConfig",
    "GatewayConfig",
    "OpenAICompatEngine",
    "Registry",
    "ReplayIndex",
    "Router",
    "Scrubber",
    "StoreError",
    "StreamAccumulator",
    "TaskIndex",
    "Trace",
    "TraceStore",
    "TrainConfig",
    "WriterConfig",
    "__version__",
    "build_dataset",
    "build_trace",
    "collect_report",
    "create_app",
    "curate",
    "discover_tasks",
    "evaluate_task",
    "feedback",
    "fingerprint",
    "gate",
    "import_bfcl",
    "iter_curated",
    "load_base",
    "load_catalog",
    "load_dataset",
    "merge_tasks",
    "open_store",
    "redact_trace",
    "rename_task",
    "run_demo",
    "run_flywheel",
    "select_models",
    "set_route",
    "simulate_bfcl",
    "split_task",
    "trace_stats",
    "train_adapter",
    "validate_answer",
    "wrap",
]

if TYPE_CHECKING:  # pragma: no cover
    from protege.capture.extract import build_trace as build_trace
    from protege.capture.stream import StreamAccumulator as StreamAccumulator
    from protege.capture.writer import CaptureWriter as CaptureWriter
    from protege.capture.writer import WriterConfig as WriterConfig
    from protege.database import open_store as open_store
    from protege.store.db import StoreError as StoreError
    from protege.store.db import TraceStore as TraceStore
    from protege.store.records import Feedback as Feedback
    from protege.store.records import Trace as Trace


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'protege' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
