"""Curation: filter, scrub and dedup raw traces into the curated view.

Imports stay light: opening a store imports ``protege.curate.migrations``,
so spaCy, datasketch and jsonschema load only when they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "CurateConfig",
    "CurateReport",
    "ScrubConfig",
    "Scrubber",
    "curate",
    "iter_curated",
    "redact_trace",
]

if TYPE_CHECKING:
    from protege.curate.pipeline import CurateConfig, CurateReport, curate
    from protege.curate.scrub import Scrubber, ScrubConfig, redact_trace
    from protege.curate.view import iter_curated

_WHERE = {
    "CurateConfig": "protege.curate.pipeline",
    "CurateReport": "protege.curate.pipeline",
    "curate": "protege.curate.pipeline",
    "iter_curated": "protege.curate.view",
    "ScrubConfig": "protege.curate.scrub",
    "Scrubber": "protege.curate.scrub",
    "redact_trace": "protege.curate.scrub",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'protege.curate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
