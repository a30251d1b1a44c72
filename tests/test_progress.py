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
