"""The teacher seam (``Teacher``: complete a chat request, stream one) and its
implementations: an OpenAI-compatible endpoint, and recorded answers offline."""

from __future__ import annotations

from protege.teacher.base import HttpTeacher, ReplayTeacher, Teacher, TeacherError, message_of
from protege.teacher.replay import ReplayIndex, create_replay_app

__all__ = ["HttpTeacher", "ReplayIndex", "ReplayTeacher", "Teacher", "TeacherError", "create_replay_app",
           "message_of"]
