"""Routing: which model answers a request, and validation of student answers."""

from __future__ import annotations

from protege.router.router import Decision, Router, StudentInfo
from protege.router.routes import Route, RouteTable, list_routes, parse_mode, set_route
from protege.router.sse import completion_to_sse
from protege.router.validate import validate_answer

__all__ = [
    "Decision",
    "Route",
    "RouteTable",
    "Router",
    "StudentInfo",
    "completion_to_sse",
    "list_routes",
    "parse_mode",
    "set_route",
    "validate_answer",
]
