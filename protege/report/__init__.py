"""The report: per-task quality, cost/quality frontier, traffic, fallbacks and
savings, as a self-contained HTML page, JSON, a terminal table, and live at
``/ui`` with a trace browser."""

from __future__ import annotations

from protege.report.data import collect_report

__all__ = ["collect_report", "create_ui_app", "render_html"]


def __getattr__(name: str) -> object:
    # The HTML renderer and the web app load on first use only.
    if name == "render_html":
        from protege.report.html import render_html

        return render_html
    if name == "create_ui_app":
        from protege.report.ui import create_ui_app

        return create_ui_app
    raise AttributeError(name)
