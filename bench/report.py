"""`protege report` data collection at scale, against a naive baseline measured
in the same run.

    .venv/bin/python bench/report.py             # 100k traces, SQLite
    .venv/bin/python bench/report.py --quick     # 20k traces
    .venv/bin/python bench/report.py --pg postgresql://postgres@127.0.0.1:5432/test

``collect_report`` aggregates traffic in SQL on the extracted columns (payloads
never read); the baseline reads every trace with ``iter_traces`` (payloads
decoded, as a report written on the store's public iterator would) and
aggregates the same figures in Python: calls per task and server, cost,
fallback reasons, hourly savings. Both results are checked equal; medians over
rounds. The HTML rendering time of the collected data is printed too.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protege.capture import build_trace  # noqa: E402
from protege.database import open_store  # noqa: E402
from protege.report import collect_report  # noqa: E402
from protege.report.html import render_html  # noqa: E402

TASKS = [f"task-{i}" for i in range(6)]
REASONS = ["schema:get_weather:'city' is a required property", "engine_error:TimeoutError", "empty_answer",
           "arguments_not_json:lookup", "finish_reason:length"]


def populate(store: Any, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    start = math.floor(time.time() / 3600) * 3600 - 2 * 86400
    batch = []
    for i in range(n):
        task = rng.choice(TASKS)
        r = rng.random()
        who = "student" if r < 0.55 else "fallback" if r < 0.6 else "teacher"
        req = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"question {i} for {task}"}]}
        resp = {
            "id": f"c{i}", "object": "chat.completion", "created": 0, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {i}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
        }
        batch.append(
            build_trace(
                req, resp, created_at=start + i * (2 * 86400 / n), task_id=task if rng.random() > 0.05 else None,
                served_by=who, cost_usd=0.00002 if who == "student" else 0.0015 + 0.0001 * TASKS.index(task),
                latency_ms=rng.uniform(50, 900), fallback_reason=rng.choice(REASONS) if who == "fallback" else None,
                status="ok" if rng.random() > 0.01 else "error",
            )
        )
        if len(batch) == 5000:
            store.add_traces(batch)
            batch = []
    store.add_traces(batch)


def naive(store: Any) -> dict[str, Any]:
    """The same figures from a Python pass over every decoded trace."""
    served: dict[tuple[str, str], int] = defaultdict(int)
    cost = 0.0
    teacher_cost: dict[str, list[float]] = defaultdict(list)
    student: dict[tuple[str, int], list[float]] = defaultdict(list)
    kinds: dict[str, int] = defaultdict(int)
    for t in store.iter_traces():
        task = t.task_id or "(unassigned)"
        served[(task, t.served_by)] += 1
        cost += t.cost_usd or 0.0
        if t.served_by in ("teacher", "fallback") and t.status == "ok" and t.cost_usd is not None:
            teacher_cost[task].append(t.cost_usd)
        if t.served_by == "student" and t.status == "ok":
            student[(task, int(t.created_at) // 3600)].append(t.cost_usd or 0.0)
        if t.fallback_reason:
            kinds[t.fallback_reason.split(":", 1)[0]] += 1
    saved = 0.0
    for (task, _hour), costs in student.items():
        avg = sum(teacher_cost[task]) / len(teacher_cost[task])
        saved += len(costs) * avg - sum(costs)
    return {"calls": sum(served.values()), "cost": cost, "saved": saved, "kinds": dict(kinds),
            "served": dict(served)}


def timed(fn: Any, rounds: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20k traces instead of 100k")
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg", default=None, help="PostgreSQL URL (a fresh schema is created and dropped)")
    args = ap.parse_args()
    n = args.n or (20_000 if args.quick else 100_000)
    schema = None
    if args.pg:
        import psycopg

        schema = "bench_" + uuid.uuid4().hex[:8]
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='protege-bench-report-')}/p.db"
    try:
        store = open_store(url)
        t0 = time.perf_counter()
        populate(store, n)
        print(f"{n:,} traces stored in {time.perf_counter() - t0:.1f} s ({store.dialect})")
        t_report, data = timed(lambda: collect_report(store), args.rounds)
        t_naive, base = timed(lambda: naive(store), max(1, args.rounds - 1))
        t_html, page = timed(lambda: render_html(data), args.rounds)
        # Same figures both ways.
        assert data["totals"]["calls"] == base["calls"] == n
        assert math.isclose(data["totals"]["cost_usd"], base["cost"], rel_tol=1e-9)
        assert math.isclose(data["totals"]["saved_usd"], base["saved"], rel_tol=1e-9)
        assert {r["kind"]: r["count"] for r in data["fallback_reasons"]["by_kind"]} == base["kinds"]
        for t in data["tasks"]:
            for who, k in t["served"].items():
                assert base["served"].get((t["task_id"], who), 0) == k
        print(f"{'':28}{'median s':>10}")
        print(f"{'collect_report (SQL)':28}{t_report:>10.3f}")
        print(f"{'naive iter_traces + Python':28}{t_naive:>10.3f}")
        print(f"{'render_html':28}{t_html:>10.3f}   ({len(page) / 1024:.0f} KiB)")
        print(f"speed-up: {t_naive / t_report:.1f}x; figures identical (calls, cost, savings, fallbacks, served)")
        store.close()
    finally:
        if schema:
            import psycopg

            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
