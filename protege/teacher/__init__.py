"""Offline teachers: replay of recorded answers."""

from __future__ import annotations

from protege.teacher.replay import ReplayIndex, create_replay_app

__all__ = ["ReplayIndex", "create_replay_app"]
