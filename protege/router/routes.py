"""Rollout mode per task, kept in the store so every gateway replica sharing
it agrees within one poll interval, and changeable without a restart."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from protege.ids import new_id
from protege.router.migrations import route_changes, routes

if TYPE_CHECKING:
    from protege.store.db import TraceStore

MODES = ("off", "shadow", "canary", "live")
_CANARY = re.compile(r"^canary(?::(\d+(?:\.\d+)?))?%?$")


@dataclass(frozen=True)
class Route:
    task_id: str
    mode: str = "off"
    canary_pct: float = 0.0
    reason: str | None = None
    updated_at: float = 0.0

    @property
    def label(self) -> str:
        return f"canary:{self.canary_pct:g}" if self.mode == "canary" else self.mode


def parse_mode(text: str) -> tuple[str, float]:
    """'shadow' | 'live' | 'off' | 'canary:10' -> (mode, canary percent)."""
    text = text.strip().lower()
    if text in ("off", "shadow"):
        return text, 0.0
    if text == "live":
        return "live", 100.0
    m = _CANARY.match(text)
    if m:
        pct = float(m.group(1) or 10)
        if not 0 < pct <= 100:
            raise ValueError(f"canary percentage must be in (0, 100], got {pct:g}")
        return "canary", pct
    raise ValueError(f"unknown route mode {text!r}: use off, shadow, canary:PCT or live")


def set_route(store: TraceStore, task_id: str, mode: str, *, reason: str | None = None) -> Route:
    name, pct = parse_mode(mode)
    now = time.time()
    row = {"task_id": task_id, "mode": name, "canary_pct": pct, "reason": reason, "updated_at": now}
    with store.write() as conn:
        updated = conn.execute(
            routes.update().where(routes.c.task_id == task_id).values(**row)
        ).rowcount
        if not updated:
            conn.execute(routes.insert().values(**row))
        conn.execute(
            route_changes.insert().values(
                id=new_id(), task_id=task_id, mode=name, canary_pct=pct, reason=reason, at=now
            )
        )
    return Route(task_id, name, pct, reason, now)


def list_routes(store: TraceStore) -> list[Route]:
    with store.read() as conn:
        rows = conn.execute(sa.select(routes).order_by(routes.c.task_id)).all()
    return [Route(**dict(r._mapping)) for r in rows]


def route_history(store: TraceStore, task_id: str) -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(route_changes).where(route_changes.c.task_id == task_id).order_by(route_changes.c.at)
        ).all()
    return [dict(r._mapping) for r in rows]


class RouteTable:
    """In-memory copy of the routes, refreshed from the store by a background
    thread every ``poll_s`` seconds; lookups on the hot path are dict reads."""

    def __init__(self, store: TraceStore, *, poll_s: float = 2.0) -> None:
        self.store = store
        self.poll_s = poll_s
        self._routes: dict[str, Route] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    def refresh(self) -> None:
        try:
            self._routes = {r.task_id: r for r in list_routes(self.store)}
        except Exception:  # keep serving with the last known routes
            pass

    def get(self, task_id: str) -> Route:
        return self._routes.get(task_id) or Route(task_id)

    def start(self) -> RouteTable:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="protege-routes", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
