"""Importers: real agent workloads brought in as traces."""

from __future__ import annotations

from protege.importers.bfcl import (
    BfclError,
    BfclImportConfig,
    Exchange,
    ImportReport,
    available_categories,
    import_bfcl,
    iter_bfcl_exchanges,
    resolve_categories,
    to_json_schema,
    to_openai_tools,
)

__all__ = [
    "BfclError",
    "BfclImportConfig",
    "Exchange",
    "ImportReport",
    "available_categories",
    "import_bfcl",
    "iter_bfcl_exchanges",
    "resolve_categories",
    "to_json_schema",
    "to_openai_tools",
]
