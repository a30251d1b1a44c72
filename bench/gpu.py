"""The GPU path, measured in one run (bench/gpu.sh calls it on a lent GPU machine).

    python bench/gpu.py --out "$OUT"            # the whole run, about 6 minutes on one H100
    python bench/gpu.py --out /tmp/x --quick    # fewer steps and requests

Stages, each writing its figures into ``<out>/gpu.json`` as soon as it ends
(a stage that fails records its error and the others still run):

1. load: the packaged SmolLM2-135M-Instruct and Gemma-3-270M on the GPU;
2. train: one BFCL task (``bench/train.py``'s) with LoRA and with QLoRA
   (bitsandbytes NF4) on SmolLM2, LoRA on Gemma, and the CPU path on this
   machine's CPU for a few steps; answer tokens learned per second each;
3. serve: a vLLM OpenAI server with ``--enable-lora`` over SmolLM2, three
   adapters loaded at runtime through the dynamic-LoRA endpoints
   (``protege.engines.engine.OpenAICompatEngine``, the gateway's vLLM engine),
   each request constrained by its tool schemas' grammar; requests/s and
   p50/p99 latency at 1, 8 and 32 concurrent against the embedded engine
   (transformers + PEFT) on the same GPU, same adapters, same prompts;
4. agreement: validity of both engines' answers (the gateway's own checks)
   and whether they agree under greedy decoding, with the differing pairs kept.

vLLM that cannot start is a failure, not a skip: the run exits 1 after
writing every figure it has, with the reason under ``serve.error``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONCURRENCY = (1, 8, 32)
BASE = "smollm2-135m-instruct"
SECOND_BASE = "gemma-3-270m"


# -- figures (pure; tests/test_bench_gpu.py checks them on CPU) ---------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear between closest ranks; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def load_figures(latencies_ms: Sequence[float], wall_s: float, errors: int = 0) -> dict[str, Any]:
    """Requests/s and latency percentiles of one load level."""
    n = len(latencies_ms)
    return {
        "requests": n + errors,
        "errors": errors,
        "requests_per_s": round(n / wall_s, 2) if wall_s > 0 else None,
        "p50_ms": _r(percentile(latencies_ms, 50)),
        "p99_ms": _r(percentile(latencies_ms, 99)),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def compare_answers(requests: Sequence[dict[str, Any]], served: Sequence[Any], embedded: Sequence[Any],
                    *, keep: int = 5) -> dict[str, Any]:
    """Validity of each engine's answers and their agreement, answer by answer.

    ``served`` and ``embedded`` hold ``StudentAnswer``-like objects (``message``,
    ``finish_reason``, ``text``) or None where that engine failed. Two answers
    agree when their texts are equal (greedy decoding of one model and adapter
    should give the same tokens) or, failing that, when the gateway's
    ``agree`` reads them as the same calls; the differing pairs are kept so
    that a difference can be explained."""
    from protege.gateway.student import agree
    from protege.router.validate import validate_answer

    if not (len(requests) == len(served) == len(embedded)):
        raise ValueError("requests, served and embedded answers must be as many")
    valid = {"served": 0, "embedded": 0}
    same_text = same_calls = both = 0
    diffs: list[dict[str, Any]] = []
    for req, a, b in zip(requests, served, embedded, strict=True):
        for key, ans in (("served", a), ("embedded", b)):
            if ans is not None and not validate_answer(req, ans.message, ans.finish_reason):
                valid[key] += 1
        if a is None or b is None:
            continue
        both += 1
        if a.text == b.text:
            same_text += 1
            same_calls += 1
            continue
        if agree(a.message, b.message, req.get("tools")):
            same_calls += 1
        if len(diffs) < keep:
            diffs.append({"served": a.text, "embedded": b.text})
    n = len(requests)
    return {
        "answers": n,
        "valid_served": _share(valid["served"], n),
        "valid_embedded": _share(valid["embedded"], n),
        "compared": both,
        "same_text": _share(same_text, both),
        "same_calls": _share(same_calls, both),
        "differences": diffs,
    }


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


class Figures:
    """The run's JSON, rewritten after every stage so a killed run leaves what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"schema": 1, "started_at": time.time(), "host": platform.node()}

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)

    def stage(self, key: str, fn: Callable[[], dict[str, Any]]) -> bool:
        """Run one stage; its figures or its error (with the traceback's tail) go under ``key``."""
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:
            self.set(key, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:],
                           "seconds": round(time.perf_counter() - t0, 1)})
            print(f"gpu bench: stage {key} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return False
        out["seconds"] = round(time.perf_counter() - t0, 1)
        self.set(key, out)
        print(f"gpu bench: stage {key} done in {out['seconds']} s", file=sys.stderr, flush=True)
        return True


async def drive(call: Callable[[dict[str, Any]], Awaitable[Any]], requests: Sequence[dict[str, Any]],
                concurrency: int) -> tuple[list[Any], dict[str, Any]]:
    """Send ``requests`` through ``call`` with at most ``concurrency`` in flight;
    returns the answers (None where one failed) and the load figures."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    answers: list[Any] = [None] * len(requests)
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        async with sem:
            t0 = time.perf_counter()
            try:
                answers[i] = await call(requests[i])
            except Exception:
                errors += 1
                return
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(requests))))
    return answers, load_figures(latencies, time.perf_counter() - t0, errors)


# -- stages (GPU) --------------------------------------------------------------------------------


def _bench_train_module() -> Any:
    spec = importlib.util.spec_from_file_location("protege_bench_train", ROOT / "bench" / "train.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(card=p.name, memory_gib=round(p.total_memory / 2**30, 1))
    for pkg in ("vllm", "bitsandbytes", "transformers", "peft", "llguidance"):
        try:
            from importlib.metadata import version

            info[pkg] = version(pkg)
        except Exception:
            info[pkg] = None
    return info


def stage_load() -> dict[str, Any]:
    from protege.models.loader import load_base

    out = {}
    for name in (BASE, SECOND_BASE):
        t0 = time.perf_counter()
        model, _ = load_base(name, device="cuda")
        out[name] = {"load_s": round(time.perf_counter() - t0, 1), "device": str(model.device),
                     "parameters": sum(p.numel() for p in model.parameters())}
        del model
    return out


def train_one(base: str, data: Any, *, device: str, quantization: str, steps: int, batch: int) -> dict[str, Any]:
    from protege.models.loader import load_base
    from protege.train import TrainConfig, train_adapter

    model, tok = load_base(base, device="cpu")
    cfg = TrainConfig(base=base, max_steps=steps, batch_size=batch, lr=1e-3, device=device,
                      quantization=quantization, eval_every=steps, patience=0, seed=0)
    res = train_adapter(dataset=data, config=cfg, model=model, tokenizer=tok)
    m = res.metrics
    return {"adapter_dir": str(res.adapter_dir), "answer_tokens_per_s": m.get("answer_tokens_per_s"),
            "tokens_per_s": m.get("tokens_per_s"), "steps": m.get("steps"),
            "best_val_loss": m.get("best_val_loss"), "peak_cuda_bytes": m.get("peak_cuda_bytes")}


def stage_train(quick: bool) -> dict[str, Any]:
    data = _bench_train_module().bfcl_task(64 if quick else 256, 16 if quick else 32, 0)
    steps = 8 if quick else 32
    runs = {
        "smollm2_lora_gpu": dict(base=BASE, device="cuda", quantization="none", steps=steps, batch=16),
        "smollm2_qlora_gpu": dict(base=BASE, device="cuda", quantization="4bit", steps=steps, batch=16),
        "gemma_lora_gpu": dict(base=SECOND_BASE, device="cuda", quantization="none", steps=steps, batch=16),
        # The same trainer on this machine's CPU, a few steps: the CPU path's figure here.
        "smollm2_lora_cpu": dict(base=BASE, device="cpu", quantization="none", steps=4, batch=8),
    }
    out: dict[str, Any] = {"task": "bfcl simple_python + live_simple", "train_rows": len(data.train)}
    for key, kw in runs.items():
        try:
            out[key] = train_one(data=data, **kw)
        except Exception as exc:
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _requests(n: int) -> list[dict[str, Any]]:
    data = _bench_train_module().bfcl_task(0, n, 1)
    return [{"messages": r["messages"], "tools": r["tools"]} for r in data.validation]


def stage_serve(train: dict[str, Any], quick: bool, vllm_timeout_s: float) -> tuple[dict[str, Any], bool]:
    """vLLM vs the embedded engine; the bool says whether vLLM started and answered."""
    from protege.engines.engine import AdapterSpec, EmbeddedEngine, OpenAICompatEngine
    from protege.engines.vllm import start_vllm
    from protege.models.loader import load_base

    adapters = {k: train[k]["adapter_dir"] for k in ("smollm2_lora_gpu", "smollm2_qlora_gpu", "smollm2_lora_cpu")
                if isinstance(train.get(k), dict) and train[k].get("adapter_dir")}
    if not adapters:
        raise RuntimeError("no SmolLM2 adapter was trained: nothing to serve")
    requests = _requests(32 if quick else 96)
    names = sorted(adapters)
    # Round-robin over the adapters: several adapters on one base in every batch.
    routed = [(names[i % len(names)], r) for i, r in enumerate(requests)]
    out: dict[str, Any] = {"adapters": names, "requests": len(requests)}
    t0 = time.perf_counter()
    try:
        proc, url = start_vllm(BASE, timeout_s=vllm_timeout_s,
                               # The embedded engine shares the card: leave it room.
                               extra=["--gpu-memory-utilization", "0.4", "--max-model-len", "4096"])
    except Exception as exc:
        out["error"] = f"vLLM did not start: {type(exc).__name__}: {exc}"
        return out, False
    out["vllm_start_s"] = round(time.perf_counter() - t0, 1)
    model, tok = load_base(BASE, device="cuda")
    vllm_engine = OpenAICompatEngine(url, tok, vllm=True, timeout_s=120)
    embedded = EmbeddedEngine((model, tok), max_batch=32, max_wait_ms=4)
    ok = True
    try:
        for name in names:
            spec = AdapterSpec.from_dir(name, adapters[name])
            vllm_engine.load_adapter(spec)
            embedded.load_adapter(spec)
        answers: dict[str, list[Any]] = {}

        async def measure() -> None:
            # One event loop for every level: the engines' HTTP clients belong to it.
            for label, engine in (("vllm", vllm_engine), ("embedded", embedded)):
                async def call(item: Any, engine: Any = engine) -> Any:
                    return await engine.generate(item[0], item[1])

                levels = {}
                for c in CONCURRENCY:
                    got, figs = await drive(call, routed, c)  # type: ignore[arg-type]
                    levels[str(c)] = figs
                    answers.setdefault(label, got)
                out[label] = levels

        asyncio.run(measure())
        if out["vllm"]["1"]["errors"] == len(routed):
            ok = False
            out["error"] = "vLLM started but answered no request"
        out["agreement"] = compare_answers([r for _, r in routed], answers["vllm"], answers["embedded"])
    finally:
        embedded.close()
        try:
            vllm_engine.close()
        except RuntimeError:  # its async client belonged to the finished loop
            pass
        proc.terminate()
    return out, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for gpu.json")
    ap.add_argument("--quick", action="store_true", help="fewer steps and requests")
    ap.add_argument("--vllm-timeout", type=float, default=240.0, help="seconds vLLM gets to answer /health")
    args = ap.parse_args()
    import torch

    figs = Figures(args.out / "gpu.json")
    figs.set("device", device_info())
    if not torch.cuda.is_available():
        figs.set("error", "no CUDA device")
        print("gpu bench: no CUDA device; this script is for a GPU machine", file=sys.stderr)
        return 1
    figs.stage("load", stage_load)
    figs.stage("train", lambda: stage_train(args.quick))
    served: dict[str, bool] = {}

    def serve() -> dict[str, Any]:
        out, served["ok"] = stage_serve(figs.data.get("train") or {}, args.quick, args.vllm_timeout)
        return out

    figs.stage("serve", serve)
    figs.set("finished_at", time.time())
    if not served.get("ok"):
        err = (figs.data.get("serve") or {}).get("error", "serve stage failed")
        print(f"gpu bench: FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
