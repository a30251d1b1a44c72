"""What ``protege.wrap`` adds to each call on the caller's path, against the
same unwrapped ``openai`` client in the same run.

    .venv/bin/python bench/wrap.py            # 2000 calls, 500 streams per round
    .venv/bin/python bench/wrap.py --quick

The teacher is an in-process ``httpx.MockTransport``. Answering instantly
(back-to-back calls, the worst case) the capture thread's work (JSON decode,
trace build, batched insert) competes with the caller for the GIL and the
CPU; with ``--teacher-ms 20`` it runs while the caller waits, as it does
against a real model, and what remains is the wrapper's own path (snapshot,
id, raw-response parse). Rounds alternate plain and wrapped; medians and p99
of per-call wall time. The wrapped run must store one trace per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

import protege  # noqa: E402
from protege.capture import wrap as wrap_mod  # noqa: E402
from protege.database import open_store  # noqa: E402

BODY = json.dumps({
    "id": "chatcmpl-b", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine, thanks"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 30, "completion_tokens": 3, "total_tokens": 33},
}).encode()
CHUNKS = b"".join(
    b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                            "choices": [{"index": 0, "delta": {"content": w + " "}, "finish_reason": None}]}).encode() + b"\n\n"
    for w in "one two three four five six seven eight".split()
) + b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'


TEACHER_S = 0.0


def handler(request: httpx.Request) -> httpx.Response:
    if TEACHER_S:
        time.sleep(TEACHER_S)
    if b'"stream":true' in request.content.replace(b" ", b""):
        return httpx.Response(200, content=CHUNKS, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, content=BODY, headers={"content-type": "application/json"})


def client() -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-bench", base_url="http://teacher.bench/v1", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(handler)))


MESSAGES = [{"role": "system", "content": "You are terse. " * 20}, {"role": "user", "content": "How are you?"}]


def run(c: openai.OpenAI, calls: int, stream: bool) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        if stream:
            for _chunk in c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
                pass
        else:
            c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[(len(xs) * 99 + 99) // 100 - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--teacher-ms", type=float, default=0.0, help="teacher answer time (0: instant)")
    args = ap.parse_args()
    global TEACHER_S
    TEACHER_S = args.teacher_ms / 1000
    n_plain, n_stream = (400, 100) if args.quick else (2000, 500)
    if TEACHER_S:
        n_plain, n_stream = n_plain // 5, n_stream // 5
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"sqlite:///{Path(d) / 'wrap.db'}")
        plain, wrapped = client(), protege.wrap(client(), store=store)
        for c in (plain, wrapped):  # warm both paths
            run(c, 20, False)
            run(c, 5, True)
        wrap_mod.flush(60)
        before = store.count_traces()
        print(f"the teacher answers in {args.teacher_ms:g} ms")
        print(f"{'':26} {'plain p50':>10} {'wrapped p50':>12} {'added':>8} {'plain p99':>10} {'wrapped p99':>12}")
        for stream, n in ((False, n_plain), (True, n_stream)):
            a: list[float] = []
            b: list[float] = []
            for _ in range(args.rounds):
                a += run(plain, n, stream)
                b += run(wrapped, n, stream)
            label = f"{'streaming' if stream else 'non-streaming'} ({n * args.rounds} calls)"
            pa, pb = statistics.median(a), statistics.median(b)
            print(f"{label:26} {pa:>8.0f}us {pb:>10.0f}us {pb - pa:>6.0f}us {p99(a):>8.0f}us {p99(b):>10.0f}us")
        wrap_mod.flush(120)
        stored = store.count_traces() - before
        sent = (n_plain + n_stream) * args.rounds
        print(f"traces stored {stored} of {sent} wrapped calls: {'all' if stored == sent else 'MISSING'}")


if __name__ == "__main__":
    main()
