"""The demo: ``protege demo`` (``make demo``) runs every stage offline on the
packaged defaults (capture, curate, tasks, datasets, train, evaluate, gate,
route), then sends unseen traffic with and without the students;
``protege demo --capture-only`` (``make demo-capture``) is the one-minute
tour of the capture stage alone."""

from __future__ import annotations

from typing import Any

__all__ = ["run_capture", "run_demo"]


def run_demo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Every stage, end to end: see :func:`protege.demo.end_to_end.run_demo`."""
    from protege.demo.end_to_end import run_demo as run

    return run(*args, **kwargs)


def run_capture(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The capture stage alone: see :func:`protege.demo.capture.run_capture`."""
    from protege.demo.capture import run_capture as run

    return run(*args, **kwargs)
