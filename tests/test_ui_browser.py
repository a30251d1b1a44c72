"""The report file and the live /ui in a real headless Chromium (Debian's
``chromium``), driven over the DevTools protocol: the pages render, the plots
are there and have a size, the console stays clean, no script runs (trace
content carries a ``<script>``), and nothing is fetched from anywhere but the
page's own origin.

Needs /usr/bin/chromium (``apt-get install -y chromium``); skipped, with that
reason, where it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protege.database import open_store

CHROMIUM = os.environ.get("PROTEGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"headless browser test needs Chromium at {CHROMIUM} (apt-get install chromium)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--window-size=1300,1000",
    "--remote-debugging-port=0",
]
HEADINGS = [
    "Summary",
    "Tasks",
    "Quality per task",
    "Cost / quality frontier",
    "Traffic and who served it",
    "Fallback reasons",
    "Savings over time",
    "Shadow agreement",
]


class Browser:
    """A minimal DevTools-protocol client: one page, its events collected."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == event for e in self.events):
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "method" in msg:
                self.events.append(msg)

    def open(self, url: str) -> dict[str, Any]:
        """Load ``url``; return what the page shows and every problem it had."""
        self.events = []
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")
        page = self.evaluate(
            """({
                title: document.title,
                h2: [...document.querySelectorAll('h2')].map(e => e.textContent),
                plots: [...document.querySelectorAll('svg.plot')].map(e => {
                    const r = e.getBoundingClientRect();
                    return {cls: e.getAttribute('class'), w: r.width, h: r.height,
                            marks: e.querySelectorAll('rect, circle, path').length};
                }),
                scripts: document.querySelectorAll('script').length,
                text: document.body.innerText,
                links: [...document.querySelectorAll('a')].map(a => a.getAttribute('href')),
            })"""
        )
        page["problems"] = self.problems(url)
        return page

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def problems(self, url: str) -> list[str]:
        """Console errors, uncaught exceptions, dialogs, failed or off-origin requests."""
        out = []
        origin = url.split("/", 3)[:3] if url.startswith("http") else None
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(
                    f"exception: {p['exceptionDetails'].get('text')} {p['exceptionDetails'].get('exception', {}).get('description', '')}"
                )
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                out.append(
                    f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}"
                )
            elif m == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Page.javascriptDialogOpening":
                out.append(f"dialog: {p.get('message')}")
            elif m == "Network.loadingFailed":
                out.append(f"request failed: {p.get('errorText')} {p.get('blockedReason', '')}")
            elif m == "Network.requestWillBeSent":
                req = p["request"]["url"]
                if req.startswith("data:"):
                    continue
                same = req.split("/", 3)[:3] == origin if origin else req.startswith("file://")
                if not same:
                    out.append(f"off-origin request: {req}")
        return out

    def screenshot(self, path: Path) -> None:
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        import base64

        path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    import httpx

    pytest.importorskip("websockets.sync.client", reason="the DevTools client needs websockets >= 13")
    profile = tempfile.mkdtemp(prefix="protege-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = []
        while not targets and time.monotonic() < deadline:
            targets = [
                t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"
            ]
        from websockets.sync.client import connect

        with connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            b = Browser(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                b.send(f"{domain}.enable")
            yield b
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    from test_report import seed

    path = tmp_path_factory.mktemp("ui") / "p.db"
    store = open_store(f"sqlite:///{path}")
    info = seed(store)
    yield store, info
    store.close()


@pytest.fixture(scope="module")
def live_url(seeded_store: tuple[Any, dict[str, Any]]) -> Iterator[str]:
    """The UI mounted at /ui of a parent app, served by uvicorn on a free loopback port."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from protege.report.ui import create_ui_app

    store, _ = seeded_store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = Starlette(routes=[Mount("/ui", app=create_ui_app(store))])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/ui"
    server.should_exit = True
    thread.join(timeout=10)


def _save_shot(browser: Browser, name: str, tmp_path: Path) -> None:
    """Screenshots go to PROTEGE_UI_SCREENSHOTS when set, for a human to look at."""
    target = os.environ.get("PROTEGE_UI_SCREENSHOTS")
    path = Path(target) / name if target else tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.screenshot(path)
    assert path.stat().st_size > 10_000  # a blank page is a few hundred bytes


def _assert_report(page: dict[str, Any]) -> None:
    assert page["problems"] == []
    assert page["title"] == "protege report"
    for heading in HEADINGS:
        assert heading in page["h2"]
    classes = " ".join(p["cls"] for p in page["plots"])
    for kind in ("quality", "frontier-plot", "traffic", "fallbacks", "savings", "shadow"):
        assert kind in classes, kind
    for plot in page["plots"]:
        assert plot["w"] > 200 and plot["h"] > 40 and plot["marks"] >= 2, plot
    assert page["scripts"] == 0


def test_browser_catches_problems_it_is_meant_to_catch(browser, tmp_path):
    """Control: a page with a script error, a console error and a remote fetch is flagged."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><h2>x</h2>'
        '<script>console.error("boom"); undefinedFn();</script><img src="http://127.0.0.1:9/x.png"></body></html>'
    )
    problems = " | ".join(browser.open(bad.as_uri())["problems"])
    assert "console.error" in problems and "undefinedFn" in problems and "off-origin request" in problems


def test_static_report_file_renders_in_chromium(browser, seeded_store, tmp_path):
    from protege.report import collect_report, render_html

    store, _ = seeded_store
    html_file = tmp_path / "report.html"
    html_file.write_text(render_html(collect_report(store)), encoding="utf-8")
    page = browser.open(html_file.as_uri())
    _assert_report(page)
    assert "weather" in page["text"] and "triage" in page["text"]
    _save_shot(browser, "report.png", tmp_path)


def test_live_ui_renders_and_browses_traces_in_chromium(browser, live_url, seeded_store, tmp_path):
    store, info = seeded_store
    page = browser.open(live_url + "/")
    _assert_report(page)
    assert "/ui/traces" in page["links"]
    _save_shot(browser, "ui.png", tmp_path)

    listing = browser.open(f"{live_url}/traces?served_by=fallback&task_id=weather")
    assert listing["problems"] == [] and listing["scripts"] == 0
    assert "page 1 of 1 · 6 traces" in listing["text"]
    assert sum(1 for a in listing["links"] if a and a.startswith("/ui/traces/")) == 6

    detail = browser.open(f"{live_url}/traces/{info['xss_id']}")
    # The trace's <script> is shown as text and never runs (no dialog, no script element).
    assert detail["problems"] == [] and detail["scripts"] == 0
    assert "<script>alert('x')</script>" in detail["text"]
    assert '"city": "<script>alert(\'x\')</script>"' in detail["text"]
    for heading in ("Trace", "Error", "Request", "Response"):
        assert heading in detail["h2"]
    _save_shot(browser, "trace.png", tmp_path)
