"""protege: turn an agent's LLM calls into small specialised models.

The public API is listed in ``__all__``; everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Light names import eagerly; those that pull heavy modules load on first use.
_LAZY = {
    "Trace": "protege.store.records",
    "Feedback": "protege.store.records",
    "TraceStore": "protege.store.db",
    "open_store": "protege.store.db",
    "StoreError": "protege.store.db",
    "CaptureWriter": "protege.capture.writer",
    "WriterConfig": "protege.capture.writer",
    "StreamAccumulator": "protege.capture.stream",
    "build_trace": "protege.capture.extract",
    "wrap": "protege.capture.wrap",
    "feedback": "protege.capture.wrap",
    "create_app": "protege.gateway.app",
    "GatewayConfig": "protege.gateway.config",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # pragma: no cover
    from protege.capture.extract import build_trace
    from protege.capture.stream import StreamAccumulator
    from protege.capture.writer import CaptureWriter, WriterConfig
    from protege.store.db import StoreError, TraceStore, open_store
    from protege.store.records import Feedback, Trace


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'protege' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
