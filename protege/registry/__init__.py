"""Adapter registry: provenance and status of every trained adapter."""

from __future__ import annotations

from protege.registry.registry import (
    STATUSES,
    AdapterEvent,
    AdapterRecord,
    Registry,
    RegistryError,
    adapter_dir,
)

__all__ = ["STATUSES", "AdapterEvent", "AdapterRecord", "Registry", "RegistryError", "adapter_dir"]
