"""Where training runs live (``artifacts/adapters/<task>/<N>/``), which one a
resume continues, and the registry record of a finished adapter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protege.store.db import TraceStore

CHECKPOINT = "checkpoint.pt"
METADATA = "protege_adapter.json"
SYNTHETIC = "synthetic.jsonl"

# -- run directories -------------------------------------------------------------


def adapters_root(task_id: str) -> Path:
    from protege.config import artifacts_dir

    return artifacts_dir() / "adapters" / task_id


def version_number(name: str) -> int:
    name = name[1:] if name.startswith("v") else name
    return int(name) if name.isdigit() else 0


def new_run_dir(task_id: str, min_version: int = 1) -> Path:
    """Claim the next version directory, ``artifacts/adapters/<task>/<N>/`` (the
    registry's layout), atomically: two concurrent runs never share one."""
    root = adapters_root(task_id)
    root.mkdir(parents=True, exist_ok=True)
    n = max([version_number(p.name) for p in root.iterdir()] + [min_version - 1]) + 1
    while True:
        path = root / str(n)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def resumable_run(task_id: str) -> Path | None:
    """The newest run of the task that has a checkpoint and no finished adapter."""
    root = adapters_root(task_id)
    if not root.is_dir():
        return None
    runs = sorted(
        (p for p in root.iterdir() if (p / CHECKPOINT).exists() and not (p / METADATA).exists()),
        key=lambda p: version_number(p.name),
    )
    return runs[-1] if runs else None


# -- registry --------------------------------------------------------------------


def registry_next_version(store: TraceStore, task_id: str) -> int:
    if store is None:
        return 1
    from protege.registry import Registry

    return Registry(store).next_version(task_id)


def register_adapter(store: TraceStore, meta: dict[str, Any], adapter_dir: Path) -> Any:
    """Record the adapter in the registry as a candidate (its
    ``protege_adapter.json`` holds everything a later registration needs)."""
    from protege.registry import Registry

    version = meta["version"]
    return Registry(store).register(
        meta["task_id"],
        version=version if isinstance(version, int) else None,
        base_model=meta["base_model"],
        path=str(adapter_dir),
        dataset_id=meta["dataset"].get("id"),
        dataset_hash=meta["dataset"]["hash"],
        config=meta["config"],
        metrics=meta["metrics"],
    )
