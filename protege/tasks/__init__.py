"""Task discovery: call-site fingerprints, clustering of calls by what
they ask and do, task descriptions, and assignment of new calls."""

from __future__ import annotations

from protege.tasks.fingerprint import fingerprint, template_of

__all__ = ["DiscoverConfig", "Task", "TaskIndex", "discover_tasks", "fingerprint", "template_of"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: keep `fingerprint` import light for the gateway
    if name in ("discover_tasks", "DiscoverConfig", "Task"):
        from protege.tasks import discover

        return getattr(discover, name)
    if name == "TaskIndex":
        from protege.tasks.index import TaskIndex

        return TaskIndex
    raise AttributeError(name)
