"""What the gateway and its capture process both need, below both: the store
opened lazily (so the gateway serves while the database is down) and the
user's redaction hook."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from protege.store.records import Feedback, Trace

if TYPE_CHECKING:
    from protege.store.db import TraceStore


def load_redact(spec: str | None) -> Callable[[Trace], Trace] | None:
    """``module:function`` -> the function (it receives and returns a Trace)."""
    if not spec:
        return None
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"--redact wants module:function, got {spec!r}")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise ValueError(f"{spec!r} is not a callable")
    return fn


class LazyStore:
    """Opens the store on first use and again after a failure, so the gateway
    starts and serves (spooling) while the database is unreachable."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._store: TraceStore | None = None

    def _get(self) -> TraceStore:
        if self._store is None:
            from protege.database import open_store

            self._store = open_store(self.url)
        return self._store

    def add_traces(self, traces: list[Trace]) -> int:
        return self._get().add_traces(traces)

    def add_feedback(self, fb: Feedback) -> Feedback:
        return self._get().add_feedback(fb)

    def has_trace(self, trace_id: str) -> bool:
        return self._get().has_trace(trace_id)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
