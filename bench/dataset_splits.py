"""BFCL import and dataset split benchmark, each against a naive baseline in the same run.

    .venv/bin/python bench/dataset_splits.py            # full (all multi-turn + single-turn categories)
    .venv/bin/python bench/dataset_splits.py --quick    # fewer entries

1. Import throughput: ``import_bfcl`` (batched, existence pre-check) against a
   naive loop that stores each trace with ``add_trace``; same exchanges,
   fresh SQLite store each round; medians over rounds.
2. Split quality on BFCL traffic (one task per category): the grouped,
   stratified split of ``build_dataset`` against a seeded random 70/10/20 row
   split. Leakage = agent sessions whose calls land in more than one split,
   test rows whose session also has training rows, test rows whose exact input
   also occurs in train; balance = mean absolute gap between a tool's test
   share and 20%, over tools with at least 10 calls.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protege.database import open_store  # noqa: E402
from protege.datasets import DatasetConfig, build_dataset  # noqa: E402
from protege.datasets.build import _input_key, stratum_of  # noqa: E402
from protege.importers.bfcl import (  # noqa: E402  # noqa: E402
    DEFAULT_MODEL,
    DEFAULT_SYSTEM_PROMPT,
    exchange_to_trace,
    import_bfcl,
    iter_bfcl_exchanges,
)


def _naive_import(store, categories, limit):
    n = 0
    for ex in iter_bfcl_exchanges(categories, limit=limit):
        store.add_trace(exchange_to_trace(ex, model=DEFAULT_MODEL, system_prompt=DEFAULT_SYSTEM_PROMPT))
        n += 1
    return n


def bench_import(categories, limit, rounds, tmp: Path) -> dict:
    out: dict[str, list[float]] = {"protege": [], "naive": []}
    n = 0
    for r in range(rounds):
        for name in ("naive", "protege"):
            store = open_store(f"sqlite:///{tmp / f'imp-{name}-{r}.db'}")
            t0 = time.perf_counter()
            if name == "protege":
                n = import_bfcl(store, categories, limit=limit).traces
            else:
                n = _naive_import(store, categories, limit)
            out[name].append(n / (time.perf_counter() - t0))
            store.close()
    med = {k: statistics.median(v) for k, v in out.items()}
    return {"traces": n, "traces_per_s": med, "ratio": med["protege"] / med["naive"]}


def _quality(rows, splits, output_type):
    sess = defaultdict(set)
    for r, s in zip(rows, splits, strict=True):
        if r["session_id"]:
            sess[r["session_id"]].add(s)
    train_sessions = {k for k, v in sess.items() if "train" in v}
    train_inputs = {_input_key(r) for r, s in zip(rows, splits, strict=True) if s == "train"}
    test = [r for r, s in zip(rows, splits, strict=True) if s == "test"]
    strata = Counter(stratum_of(r, output_type) for r in rows)
    test_strata = Counter(stratum_of(r, output_type) for r in test)
    gaps = [abs(test_strata[k] / v - 0.2) for k, v in strata.items() if v >= 10]
    return {
        "sessions_split": sum(len(v) > 1 for v in sess.values()) / max(1, len(sess)),
        "test_rows_session_in_train": sum(r["session_id"] in train_sessions for r in test) / max(1, len(test)),
        "test_rows_input_in_train": sum(_input_key(r) in train_inputs for r in test) / max(1, len(test)),
        "stratum_gap": statistics.mean(gaps) if gaps else 0.0,
        "test_share": len(test) / len(rows),
    }


def bench_split(categories, limit, tmp: Path) -> dict:
    store = open_store(f"sqlite:///{tmp / 'split.db'}")
    import_bfcl(store, categories, limit=limit)
    store.set_task_ids({r["id"]: r["meta_cat"] for r in _cat_rows(store)})
    results = {}
    for cat in categories:
        t0 = time.perf_counter()
        ds = build_dataset(store, cat, DatasetConfig(root=tmp / "ds"))
        build_s = time.perf_counter() - t0
        rows = list(ds.rows())
        ours = [name for name in ("train", "validation", "test") for _ in ds.split(name)]
        rng = random.Random(0)
        naive = [rng.choices(["train", "validation", "test"], weights=[7, 1, 2])[0] for _ in rows]
        results[cat] = {
            "rows": len(rows),
            "output_type": ds.manifest["output_type"],
            "build_s": round(build_s, 2),
            "prefix_share": ds.manifest["prefix_share"],
            "protege": _quality(rows, ours, ds.manifest["output_type"]),
            "naive_random": _quality(rows, naive, ds.manifest["output_type"]),
        }
    store.close()
    return results


def _cat_rows(store):
    for t in store.iter_traces():
        yield {"id": t.id, "meta_cat": t.meta["bfcl"]["category"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    limit = 40 if args.quick else None
    import_cats = ["simple_python", "parallel", "multi_turn_base"]
    split_cats = ["multi_turn_base", "multi_turn_miss_param", "simple_python", "live_multiple", "irrelevance"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        imp = bench_import(import_cats, limit, args.rounds, tmp)
        split = bench_split(split_cats, limit, tmp)
    print(f"import ({', '.join(import_cats)}; {imp['traces']} traces, median of {args.rounds}):")
    print(
        f"  protege import_bfcl {imp['traces_per_s']['protege']:8.0f} traces/s   "
        f"naive add_trace loop {imp['traces_per_s']['naive']:8.0f} traces/s   ratio {imp['ratio']:.1f}x"
    )
    print("split quality (protege grouped+stratified | naive random rows):")
    hdr = f"  {'task':<24}{'rows':>6}  {'sessions split':>16}  {'test rows w/ session in train':>30}  {'test input in train':>20}  {'tool share gap':>16}"
    print(hdr)
    for cat, r in split.items():
        p, n = r["protege"], r["naive_random"]
        print(
            f"  {cat:<24}{r['rows']:>6}  {p['sessions_split']:>7.1%} | {n['sessions_split']:<6.1%}  "
            f"{p['test_rows_session_in_train']:>14.1%} | {n['test_rows_session_in_train']:<13.1%}  "
            f"{p['test_rows_input_in_train']:>9.1%} | {n['test_rows_input_in_train']:<8.1%}  "
            f"{p['stratum_gap']:>7.3f} | {n['stratum_gap']:<6.3f}"
        )
    print("  build time and static prefix share:")
    for cat, r in split.items():
        print(f"  {cat:<24} build {r['build_s']:.2f} s, prefix {r['prefix_share']:.0%} of prompt chars, {r['output_type']}")
    if args.out:
        args.out.write_text(json.dumps({"import": imp, "split": split}, indent=2))


if __name__ == "__main__":
    main()
