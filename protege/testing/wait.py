"""Polling for something another thread or process does (a batch written, a
route reloaded): tests, the demo and the benchmarks wait alike."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Whether ``predicate`` came true within ``timeout`` seconds (asked once
    more at the deadline, so a slow last step still counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
