"""`protege logs stats` and `protege logs import` at scale, each against a naive
baseline measured in the same run.

    .venv/bin/python bench/logs_stats.py             # 100k traces, SQLite
    .venv/bin/python bench/logs_stats.py --quick     # 20k traces
    .venv/bin/python bench/logs_stats.py --pg postgresql://postgres@127.0.0.1:5432/test

1. Stats: ``trace_stats`` (extracted columns only: one GROUP BY with
   ``percentile_disc`` on PostgreSQL, one narrow sequential read aggregated
   per group on SQLite) against a naive pass that reads every trace with
   ``iter_traces`` (payloads decoded) and aggregates in Python; also against
   ``trace_columns`` + Python (no payloads). Medians over rounds; the figures
   of all three are checked equal.
2. Import: ``import_jsonl`` (checked first, batched, existence pre-check)
   against a loop that builds each record's trace and stores it with
   ``add_trace``; same Data Flywheel JSONL file, fresh store each round.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protege.capture import build_trace  # noqa: E402
from protege.capture.files import import_jsonl, record_to_trace  # noqa: E402
from protege.database import open_store  # noqa: E402
from protege.stats import trace_stats  # noqa: E402

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "llama-3.1-70b"]
CLIENTS = [f"app-{i}" for i in range(8)]


def _record(i: int, now: float, rng: random.Random) -> dict:
    text = " ".join(rng.choice(["ticket", "refund", "order", "delay", "card", "address", "invoice"]) for _ in range(60))
    tool = rng.random() < 0.5
    msg = (
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "route", "arguments": json.dumps({"team": "billing"})}}]}
        if tool else {"role": "assistant", "content": text[:200]}
    )
    return {
        "timestamp": now - rng.random() * 7 * 86400,
        "workload_id": f"task-{i % 12}",
        "client_id": CLIENTS[i % len(CLIENTS)],
        "request": {
            "model": MODELS[i % len(MODELS)],
            "messages": [{"role": "system", "content": "You triage support tickets. " * 8}, {"role": "user", "content": f"{i} {text}"}],
            "tools": [{"type": "function", "function": {"name": "route", "parameters": {"type": "object", "properties": {"team": {"type": "string"}}}}}],
        },
        "response": {
            "id": f"chatcmpl-{i}", "object": "chat.completion", "created": int(now), "model": MODELS[i % len(MODELS)],
            "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if tool else "stop"}],
            "usage": {"prompt_tokens": 120 + i % 50, "completion_tokens": 10 + i % 30, "total_tokens": 130 + i % 80},
        },
        "latency_ms": rng.lognormvariate(6, 0.6),
        "ttft_ms": rng.lognormvariate(5, 0.5) if i % 3 else None,
        "status": "error" if rng.random() < 0.03 else "ok",
    }


def _fill(store, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    now = time.time()
    batch = []
    for i in range(n):
        rec = _record(i, now, rng)
        batch.append(build_trace(
            rec["request"], rec["response"], created_at=rec["timestamp"], client_id=rec["client_id"],
            task_tag=rec["workload_id"], latency_ms=rec["latency_ms"], ttft_ms=rec["ttft_ms"], status=rec["status"],
        ))
        if len(batch) == 5000:
            store.add_traces(batch)
            batch = []
    store.add_traces(batch)


def _nearest_rank(values: list[float], p: int) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[(len(values) * p + 99) // 100 - 1]


def _aggregate(rows) -> dict:
    """What trace_stats computes, in Python, from dict-like rows."""
    groups: dict = {}
    for r in rows:
        g = groups.setdefault(r["model"], {"count": 0, "errors": 0, "prompt_tokens": 0, "lat": [], "ttft": []})
        g["count"] += 1
        g["errors"] += r["status"] == "error"
        g["prompt_tokens"] += r["prompt_tokens"] or 0
        if r["latency_ms"] is not None:
            g["lat"].append(r["latency_ms"])
        if r["ttft_ms"] is not None:
            g["ttft"].append(r["ttft_ms"])
    return {
        k: (g["count"], g["errors"], g["prompt_tokens"], _nearest_rank(g["lat"], 50), _nearest_rank(g["lat"], 99),
            _nearest_rank(g["ttft"], 50))
        for k, g in groups.items()
    }


def naive_decoded(store) -> dict:
    return _aggregate(t.to_dict() for t in store.iter_traces(batch_size=5000))


def naive_columns(store) -> dict:
    cols = ["model", "status", "prompt_tokens", "latency_ms", "ttft_ms"]
    return _aggregate(store.trace_columns(cols))


def protege_sql(store) -> dict:
    res = trace_stats(store, by="model")
    return {
        g["key"]: (g["count"], g["errors"], g["prompt_tokens"], g["latency_ms"]["p50"], g["latency_ms"]["p99"],
                   g["ttft_ms"]["p50"])
        for g in res["groups"]
    }


def _time(fn, store, rounds: int) -> tuple[float, dict]:
    times, out = [], {}
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn(store)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_stats(url: str, n: int, rounds: int) -> None:
    store = open_store(url)
    t0 = time.perf_counter()
    _fill(store, n)
    print(f"  filled {store.count_traces():,} traces in {time.perf_counter() - t0:.1f} s ({store.dialect})")
    sql_s, sql = _time(protege_sql, store, rounds)
    col_s, col = _time(naive_columns, store, rounds)
    dec_s, dec = _time(naive_decoded, store, max(1, rounds // 2))
    same = sql == col == dec
    print(f"  {'method':<42} {'median':>9} {'vs protege':>11}")
    print(f"  {'protege trace_stats (by model)':<42} {sql_s * 1000:>7.0f}ms {1.0:>10.1f}x")
    print(f"  {'naive: trace_columns + Python':<42} {col_s * 1000:>7.0f}ms {col_s / sql_s:>10.1f}x")
    print(f"  {'naive: iter_traces (payloads) + Python':<42} {dec_s * 1000:>7.0f}ms {dec_s / sql_s:>10.1f}x")
    print(f"  figures identical across the three: {same}")
    store.close()


def bench_import(tmp: Path, n: int, rounds: int) -> None:
    rng = random.Random(1)
    now = time.time()
    path = tmp / "flywheel.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps(_record(i, now, rng)) + "\n")
    size_mb = path.stat().st_size / 1e6
    times: dict[str, list[float]] = {"protege": [], "naive": []}
    for r in range(rounds):
        for name in ("naive", "protege"):
            store = open_store(f"sqlite:///{tmp / f'imp-{name}-{r}.db'}")
            t0 = time.perf_counter()
            if name == "protege":
                res = import_jsonl(store, path)
                assert res.imported == n
            else:
                with open(path, "rb") as fh:
                    for number, line in enumerate(fh, 1):
                        store.add_trace(record_to_trace(json.loads(line), line=number)[0])
            times[name].append(time.perf_counter() - t0)
            assert store.count_traces() == n
            store.close()
    p, q = statistics.median(times["protege"]), statistics.median(times["naive"])
    print(f"  {n:,} records, {size_mb:.1f} MB, median of {rounds}")
    print(f"  {'protege import_jsonl':<42} {p:>7.2f} s {n / p:>9,.0f} rec/s")
    print(f"  {'naive: add_trace per record':<42} {q:>7.2f} s {n / q:>9,.0f} rec/s   ({q / p:.1f}x slower)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20k traces instead of 100k")
    ap.add_argument("--traces", type=int, help="how many traces for the stats benchmark")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pg", metavar="URL", help="also run the stats benchmark on this PostgreSQL database")
    args = ap.parse_args()
    n = args.traces or (20_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"stats over {n:,} traces")
        bench_stats(f"sqlite:///{tmp / 'stats.db'}", n, args.rounds)
        if args.pg:
            import psycopg

            schema = "bench_" + uuid.uuid4().hex[:8]
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            try:
                bench_stats(f"{args.pg}?options=-csearch_path%3D{schema}", n, args.rounds)
            finally:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")
        print("import")
        bench_import(tmp, 2_000 if args.quick else 10_000, 3)


if __name__ == "__main__":
    main()
