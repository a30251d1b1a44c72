from __future__ import annotations

import io

from protege.progress import Bar


def test_piped_progress_is_plain_lines_at_most_every_interval():
    out = io.StringIO()
    with Bar("train t1", 100, stream=out, tty=False, every=3600) as bar:
        for step in range(1, 101):
            bar.update(step, info=f"loss {1 / step:.3f}")
    lines = out.getvalue().splitlines()
    # The first update, then nothing for an hour, then where it ended.
    assert len(lines) == 2
    assert lines[0].startswith("train t1: 1/100 (1%) loss 1.000") and "ETA" in lines[0]
    assert lines[1].startswith("train t1: 100/100 (100%) loss 0.010")
    assert "\x1b" not in out.getvalue()  # no terminal control codes in a log


def test_piped_progress_writes_again_once_the_interval_passed():
    out = io.StringIO()
    bar = Bar("evaluate", 10, stream=out, tty=False, every=0.0).start()
    for _ in range(4):
        bar.update(advance=2)
    bar.stop()
    assert [ln.split(" (")[0] for ln in out.getvalue().splitlines()] == [f"evaluate: {k}/10" for k in (2, 4, 6, 8)]


def test_piped_progress_never_leaves_the_log_waiting_past_the_interval(monkeypatch):
    import protege.progress as P

    clock = [0.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: clock[0])
    out = io.StringIO()
    bar = Bar("train t1", 100, stream=out, tty=False, every=30.0).start()
    stamps = []
    for step in range(1, 60):
        clock[0] = step * 7.0  # a step every 7 s
        before = len(out.getvalue().splitlines())
        bar.update(step)
        if len(out.getvalue().splitlines()) > before:
            stamps.append(clock[0])
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # A line at the step before the 30 s deadline, not at the first one after it (35 s).
    assert gaps and max(gaps) <= 30.0 and min(gaps) >= 21.0


def test_piped_tables_wrap_instead_of_cutting(capsys):
    from rich.table import Table

    from protege.cli.common import console

    reason = "gate failed: low bound of the share of teacher 0.81 is under 0.95 on 137 test calls"
    table = Table("task", "why")
    table.columns[1].max_width, table.columns[1].overflow, table.columns[1].no_wrap = 20, "ellipsis", True
    table.add_row("trading-bot · next step", reason)
    console().print(table)  # pytest's captured stdout is not a terminal
    out = capsys.readouterr().out
    assert reason in out and "…" not in out


def test_short_work_stays_silent_when_asked():
    import io

    from protege.progress import Bar

    out = io.StringIO()
    with Bar("import", 10, stream=out, tty=False, quiet_for=30.0) as bar:
        bar.update(10)
    assert out.getvalue() == ""
    loud = io.StringIO()
    with Bar("import", 10, stream=loud, tty=False) as bar:
        bar.update(10)
    assert "import: 10/10 (100%)" in loud.getvalue()
