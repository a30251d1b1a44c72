"""Router and student-serving benchmark.

1. Router decision time: fingerprint hit, and a miss that goes through the
   embedding classifier (target p50 <= 50 us on a hit, <= 10 ms through the
   classifier), on tasks discovered from BFCL-derived traffic.
2. Embedded student serving (protege's batching engine) against plain
   one-request-at-a-time ``model.generate``, same model, adapter, prompts and
   token budget, at 8 concurrent requests (target >= 3x requests/s).

    .venv/bin/python bench/router.py [--requests 32] [--max-new-tokens 48] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_decisions(tmp: Path, n: int = 2000) -> dict[str, Any]:
    """Decision time of the real router on discovered tasks."""
    from protege.database import open_store
    from protege.importers.bfcl import import_bfcl, iter_bfcl_exchanges
    from protege.router import Router, StudentInfo
    from protege.router.routes import Route
    from protege.tasks import TaskIndex, discover_tasks

    store = open_store(f"sqlite:///{tmp / 'router.db'}")
    cats = ["multi_turn_base", "simple_python"]
    import_bfcl(store, cats, limit=60)
    discover_tasks(store)
    index = TaskIndex.load(store)
    requests = [ex.request for ex in iter_bfcl_exchanges(cats, limit=60)]
    router = Router(
        assign=lambda req, tag: index.assign(req, task_tag=tag),
        promoted=lambda task: StudentInfo(adapter=f"{task}:v1"),
        routes=lambda task: Route(task, "live", 100.0),
    )
    # A miss: a first call of a tool loop (no earlier tool calls to go by)
    # whose tool set was never seen, behind the system prompt every task
    # shares: the fingerprint misses and the embedding classifier decides.
    fresh = [r for r in requests if r.get("tools") and not any(m.get("tool_calls") for m in r["messages"])]
    misses_in = []
    for r in fresh[:200]:
        r = json.loads(json.dumps(r))
        r["tools"] = r["tools"][:-1]
        misses_in.append(r)
    for r in requests[:50] + misses_in[:5]:
        router.decide(r)  # warm caches (fingerprint templates, the embedding model)
    hits = [router.decide(requests[i % len(requests)]).decision_us for i in range(n)]
    misses = [router.decide(r).decision_us for r in misses_in]
    store.close()
    return {
        "fingerprint_hit_p50_us": statistics.median(hits),
        "fingerprint_hit_p99_us": _pct(hits, 0.99),
        "classifier_p50_us": statistics.median(misses),
        "classifier_p99_us": _pct(misses, 0.99),
        "requests": len(requests),
    }


def bench_serving(tmp: Path, n_requests: int, max_new: int, concurrency: int = 8) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model

    from protege.engines.engine import AdapterSpec, EmbeddedEngine
    from protege.importers.bfcl import iter_bfcl_exchanges
    from protege.models.loader import load_base
    from protege.models.toolcall import build_prompt

    model, tok = load_base("smollm2-135m-instruct")
    adapter_dir = tmp / "adapter"
    peft_model = get_peft_model(model, LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    peft_model.save_pretrained(str(adapter_dir))
    model = peft_model.unload()  # back to the plain base for the engine

    requests = [ex.request for ex in iter_bfcl_exchanges(["simple_python"], limit=n_requests)]
    prompts = [build_prompt(r["messages"], r.get("tools"), tok) for r in requests]

    # Baseline: one request at a time, plain generate on the PEFT model.
    from peft import PeftModel

    base_peft = PeftModel.from_pretrained(model, str(adapter_dir))
    base_peft.eval()
    tok.padding_side = "left"
    t0 = time.perf_counter()
    base_tokens = 0
    with torch.inference_mode():
        for p in prompts:
            enc = tok(p, return_tensors="pt", add_special_tokens=False)
            out = base_peft.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.eos_token_id)
            base_tokens += out.shape[1] - enc["input_ids"].shape[1]
    base_s = time.perf_counter() - t0
    model = base_peft.unload()

    engine = EmbeddedEngine((model, tok), max_batch=concurrency, max_wait_ms=5, max_new_tokens=max_new)
    engine.load_adapter(AdapterSpec(name="t", path=adapter_dir, max_new_tokens=max_new))

    async def run() -> tuple[float, int]:
        sem = asyncio.Semaphore(concurrency)
        total = 0

        async def one(r: dict[str, Any]) -> None:
            nonlocal total
            async with sem:
                ans = await engine.generate("t", r)
                total += ans.completion_tokens

        t = time.perf_counter()
        await asyncio.gather(*[one(r) for r in requests])
        return time.perf_counter() - t, total

    eng_s, eng_tokens = asyncio.run(run())
    engine.close()
    return {
        "requests": len(requests),
        "concurrency": concurrency,
        "max_new_tokens": max_new,
        "baseline_rps": len(requests) / base_s,
        "engine_rps": len(requests) / eng_s,
        "speedup": base_s / eng_s,
        "baseline_tokens": base_tokens,
        "engine_tokens": eng_tokens,
        "engine_batches": engine.batches,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--skip-decisions", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_decisions:
            results["decisions"] = bench_decisions(Path(d))
        if not args.skip_serving:
            results["serving"] = bench_serving(Path(d), args.requests, args.max_new_tokens)
    con = Console()
    dec = results.get("decisions")
    t = Table("router decision", "p50", "p99", "target p50", title="Router decision time")
    if dec:
        t.add_row("fingerprint hit", f"{dec['fingerprint_hit_p50_us']:.1f} us", f"{dec['fingerprint_hit_p99_us']:.1f} us", "<= 50 us")
        t.add_row("embedding classifier", f"{dec['classifier_p50_us'] / 1000:.2f} ms", f"{dec['classifier_p99_us'] / 1000:.2f} ms", "<= 10 ms")
        con.print(t)
    if "serving" in results:
        s = results["serving"]
        t = Table("engine", "requests/s", "tokens", title=f"Student serving, {s['concurrency']} concurrent, {s['requests']} requests, {s['max_new_tokens']} new tokens max")
        t.add_row("plain generate, one at a time", f"{s['baseline_rps']:.2f}", str(s["baseline_tokens"]))
        t.add_row("protege embedded engine", f"{s['engine_rps']:.2f}", str(s["engine_tokens"]))
        con.print(t)
        con.print(f"speed-up: {s['speedup']:.2f}x (target >= 3x); {s['engine_batches']} batches")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
