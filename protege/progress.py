"""Progress of long work: a rich bar on a terminal, plain lines elsewhere.

Output piped to a file (CI, a multiplexer log, ``make demo > demo.log``) gets
no live bar; it gets a line about every ``every`` seconds (at the update
before the deadline, judged by the gap between updates, so that a log never
waits longer), and the last one when the work ends, so a reader of the log
can see it move::

    train task_ab12: 40/120 (33%) loss 0.152 130 tok/s, 2m10s, ETA 4m20s
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

EVERY_S = 30.0


def _span(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Bar:
    """``with Bar("train", total) as bar: bar.update(done, info="loss 0.1")``.

    ``tty`` (default: whether ``stream`` is a terminal) picks the rich bar;
    ``every``: the longest a plain log should wait for its next line."""

    def __init__(self, description: str, total: int, *, stream: IO[str] | None = None,
                 tty: bool | None = None, every: float = EVERY_S, console: Any = None,
                 quiet_for: float = 0.0) -> None:
        self.description = description
        self.total = max(0, int(total))
        self.stream = stream or sys.stdout  # where the rest of the output goes: `make demo > log` keeps it
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every
        # Plain lines only once the work has run this long: short work stays silent.
        self.quiet_for = quiet_for
        self.done = 0
        self.info = ""
        self._console = console
        self._rich: Any = None
        self._task: Any = None
        self._t0 = time.perf_counter()
        self._last_line = -float("inf")
        self._last_update: float | None = None
        self._last_done = -1

    def __enter__(self) -> Bar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Bar:
        self._t0 = time.perf_counter()
        if self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=self._console, transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total or None,
                                             completed=self.done, info=self.info)
        return self

    def update(self, done: int | None = None, *, info: str | None = None, advance: int = 0) -> None:
        if done is not None:
            self.done = int(done)
        self.done += advance
        if info is not None:
            self.info = info
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done, info=self.info)
            return
        now = time.perf_counter()
        # The next update is likely one gap away: write now if it would come past the deadline.
        gap = now - self._last_update if self._last_update is not None else 0.0
        self._last_update = now
        if now - self._last_line + gap >= self.every or (self.total and self.done >= self.total):
            self._line(now)

    def set_total(self, total: int) -> None:
        """The work turned out shorter or longer (a budget cut it)."""
        self.total = max(0, int(total))
        if self._rich is not None:
            self._rich.update(self._task, total=self.total or None)

    def line(self) -> str:
        """The plain line for the work's state now."""
        elapsed = time.perf_counter() - self._t0
        parts = [f"{self.description}: {self.done}/{self.total}" if self.total else f"{self.description}: {self.done}"]
        if self.total:
            parts[0] += f" ({self.done / self.total:.0%})"
        if self.info:
            parts.append(self.info)
        tail = _span(elapsed)
        if self.total and 0 < self.done < self.total:
            tail += f", ETA {_span(elapsed / self.done * (self.total - self.done))}"
        return " ".join(parts) + f", {tail}"

    def _line(self, now: float) -> None:
        if self.done == self._last_done or now - self._t0 < self.quiet_for:
            return
        self._last_line, self._last_done = now, self.done
        print(self.line(), file=self.stream, flush=True)

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        else:
            self._line(time.perf_counter())  # where it ended, unless that line was just written
