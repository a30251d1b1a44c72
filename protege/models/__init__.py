"""Candidate small models: the catalog, the loader, selection, tool-call format.

Light to import: torch and transformers load only when a model does.
"""

from __future__ import annotations

from typing import Any

from protege.models.catalog import Catalog, CatalogError, Constraints, ModelSpec, load_catalog
from protege.models.loader import ModelUnavailable, load_base

__all__ = [
    "Catalog",
    "CatalogError",
    "Constraints",
    "ModelSpec",
    "ModelUnavailable",
    "SelectConfig",
    "load_base",
    "load_catalog",
    "select_models",
]


def __getattr__(name: str) -> Any:
    # select pulls in sklearn and the evaluation metrics: only on demand.
    if name in ("select_models", "SelectConfig"):
        from protege.models import select

        return getattr(select, name)
    raise AttributeError(name)
