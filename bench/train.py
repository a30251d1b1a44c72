"""LoRA training benchmark: protege's trainer against a naive loop, interleaved step by step.

    .venv/bin/python bench/train.py --quick        # 32 examples, 4 steps of 4 each side
    .venv/bin/python bench/train.py                # a 500-example task, one epoch

Task: BFCL ``simple_python`` + ``live_simple`` rendered as agent traffic by
``protege.importers.bfcl`` (the agent's system prompt is the task's static
prefix; each call carries its own tool), teacher answers = BFCL ground truth.
Base model: SmolLM2-135M-Instruct (offline GGUF, cached as safetensors).

Both sides see the same examples in batches of the same size and the same
learning-rate schedule; they differ only in what the trainer does:

* protege: ``protege.train.train_adapter`` defaults: bf16 autocast (where the
  CPU has native bf16), LoRA on the top 8 blocks, length-grouped batches, loss
  and logits on answer tokens only, static prefix pruned;
* naive: plain transformers + PEFT loop: fp32, LoRA on every linear layer of
  every block, random batches padded to the longest, loss over the whole
  sequence through the full-vocabulary logits, prefix kept.

The machine is shared and noisy, so the sides alternate: after each protege
step the naive loop runs its step (until ``--baseline-steps``), and both are
validated at the same steps on the same held-out rows (mean loss over answer
tokens, each in its own prompt format). Reported: answer tokens learned per
second of training, wall time to the best validation loss both reach, peak
RSS while each side trains.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protege.importers.bfcl import DEFAULT_SYSTEM_PROMPT, iter_bfcl_exchanges  # noqa: E402
from protege.models.toolcall import build_prompt, render_answer  # noqa: E402
from protege.train import TaskData, TrainConfig  # noqa: E402

CATEGORIES = ["simple_python", "live_simple"]


# -- the task ----------------------------------------------------------------------


def bfcl_task(n_train: int, n_val: int, seed: int) -> TaskData:
    rows = []
    for ex in iter_bfcl_exchanges(CATEGORIES):
        msg = ex.response["choices"][0]["message"]
        if not msg.get("tool_calls"):
            continue
        rows.append(
            {
                "id": ex.meta["bfcl"]["id"],
                "messages": ex.request["messages"],
                "tools": ex.request.get("tools"),
                "completion": {
                    "role": "assistant",
                    "content": msg.get("content"),
                    "tool_calls": msg["tool_calls"],
                },
                "meta": {"bfcl": ex.meta["bfcl"]["id"]},
            }
        )
    random.Random(seed).shuffle(rows)
    if len(rows) < n_train + n_val:
        raise SystemExit(f"only {len(rows)} BFCL rows for {n_train} + {n_val}")
    train, val = rows[:n_train], rows[n_train : n_train + n_val]
    digest = hashlib.sha256(json.dumps([r["id"] for r in train + val]).encode()).hexdigest()
    manifest = {
        "task_id": "bfcl-simple",
        "version": "bench",
        "hash": f"sha256:{digest}",
        "output_type": "tool_call",
        "prefix": {"system": DEFAULT_SYSTEM_PROMPT, "tools": None},
    }
    return TaskData(manifest=manifest, train=train, validation=val)


# -- memory --------------------------------------------------------------------------


class RssSampler:
    """Samples the process RSS every few ms and files the peak under the active side."""

    def __init__(self) -> None:
        self.active: str | None = None
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = 4096

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    def switch(self, side: str | None) -> None:
        """Hand freed heap back to the OS first, so the next side's peak is its own."""
        self.active = None
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.active = side

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            side = self.active
            if side:
                self.peak[side] = max(self.peak.get(side, 0), self.rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# -- the naive side --------------------------------------------------------------------


class NaiveLoop:
    """What one writes first with transformers + PEFT: correct, and slow."""

    def __init__(
        self,
        model: Any,
        tok: Any,
        data: TaskData,
        *,
        lr: float,
        batch_size: int,
        seed: int,
        total_steps: int,
        warmup: int,
    ) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        self.tok = tok
        self.model = get_peft_model(
            model,
            LoraConfig(
                r=16,
                lora_alpha=32,
                lora_dropout=0.0,
                task_type="CAUSAL_LM",
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
        )
        self.model.train()
        self.train = [self._encode(r) for r in data.train]
        self.val = [self._encode(r) for r in data.validation]
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.order: list[int] = []
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lambda s: (
                (s + 1) / warmup
                if warmup and s < warmup
                else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
            ),
        )
        self.steps = 0
        self.train_time = 0.0
        self.answer_tokens = 0
        self.tokens = 0
        self.padded = 0
        self.curve: list[tuple[int, float, float]] = []  # (step, train time, val loss)

    def _encode(self, row: dict[str, Any]) -> tuple[list[int], int]:
        prompt = build_prompt(row["messages"], row.get("tools"), self.tok)  # prefix kept
        answer = render_answer(row["completion"], self.tok)
        p = self.tok(prompt, add_special_tokens=False)["input_ids"]
        a = self.tok(answer, add_special_tokens=False)["input_ids"]
        return p + a, len(p)

    def _batch(self, items: list[tuple[list[int], int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), width), self.tok.pad_token_id)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, (seq, _) in enumerate(items):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        return ids, mask

    def step(self) -> None:
        import torch

        if len(self.order) < self.batch_size:
            idx = list(range(len(self.train)))
            self.rng.shuffle(idx)
            self.order += idx
        items = [self.train[i] for i in self.order[: self.batch_size]]
        del self.order[: self.batch_size]
        t0 = time.perf_counter()
        ids, mask = self._batch(items)
        labels = ids.masked_fill(mask == 0, -100)  # the whole sequence, padding aside
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad()
        self.train_time += time.perf_counter() - t0
        self.steps += 1
        self.answer_tokens += sum(len(s) - n for s, n in items)
        self.tokens += sum(len(s) for s, _ in items)
        self.padded += ids.numel()

    def evaluate(self) -> float:
        import torch
        import torch.nn.functional as F

        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for j in range(0, len(self.val), self.batch_size):
                items = self.val[j : j + self.batch_size]
                ids, mask = self._batch(items)
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                target = ids[:, 1:].clone()
                for i, (seq, n) in enumerate(items):  # score answer tokens only, like protege
                    target[i, : n - 1] = -100
                    target[i, len(seq) - 1 :] = -100
                keep = target != -100
                total += float(F.cross_entropy(logits[keep].float(), target[keep], reduction="sum"))
                count += int(keep.sum())
        self.model.train()
        return total / count


# -- the run ---------------------------------------------------------------------------


def time_to(curve: list[tuple[int, float, float]], target: float) -> float | None:
    for _, t, v in curve:
        if v <= target + 1e-9:
            return t
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small task, few steps")
    ap.add_argument("--train", type=int, default=None, help="training examples (500; quick 32)")
    ap.add_argument("--val", type=int, default=None, help="validation examples (48; quick 8)")
    ap.add_argument("--epochs", type=float, default=1.0, help="protege epochs over the training split")
    ap.add_argument(
        "--baseline-steps",
        type=int,
        default=None,
        help="naive steps, interleaved with the first protege steps (all; full run: 24)",
    )
    ap.add_argument("--eval-every", type=int, default=None, help="validate both sides every N steps")
    ap.add_argument("--batch-size", type=int, default=None, help="examples per step (8; quick 4)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads for both sides (default: idle cores)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    import torch

    from protege.models.loader import cpu_has_bf16, load_base
    from protege.train import train_adapter
    from protege.train.model import auto_threads, resolve_precision

    # one thread count for both sides (the trainer would otherwise pick its own)
    threads = args.threads or auto_threads()
    torch.set_num_threads(threads)
    args.batch_size = args.batch_size or (4 if args.quick else 8)
    n_train = args.train or (32 if args.quick else 500)
    n_val = args.val or (8 if args.quick else 48)
    data = bfcl_task(n_train, n_val, args.seed)
    steps = max(1, math.ceil(args.epochs * math.ceil(n_train / args.batch_size)))
    if args.quick:
        steps = min(steps, 4)
    base_steps = min(steps, args.baseline_steps or (steps if args.quick else 24))
    eval_every = args.eval_every or max(1, min(base_steps, steps) // 3)

    t0 = time.perf_counter()
    model, tok = load_base("smollm2-135m-instruct")
    load_s = time.perf_counter() - t0
    naive_model = copy.deepcopy(model)
    print(
        f"SmolLM2-135M loaded in {load_s:.1f} s; {torch.get_num_threads()} threads; "
        f"native bf16: {cpu_has_bf16()}; task: {n_train} train / {n_val} val BFCL rows; "
        f"protege {steps} steps, naive {base_steps} steps, eval every {eval_every}",
        flush=True,
    )

    warmup = int(0.05 * steps)
    naive = NaiveLoop(
        naive_model,
        tok,
        data,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        total_steps=steps,
        warmup=warmup,
    )
    cfg = TrainConfig(
        epochs=args.epochs,
        max_steps=steps if args.quick else None,
        lr=args.lr,
        batch_size=args.batch_size,
        eval_every=eval_every,
        patience=0,
        seed=args.seed,
        max_eval_examples=n_val,
    )
    protege_curve: list[tuple[int, float, float]] = []
    sampler = RssSampler()

    def interleave(state: Any) -> None:
        if state.val_curve and state.val_curve[-1][0] == state.step:
            protege_curve.append((state.step, state.train_time_s, state.val_curve[-1][1]))
        sampler.switch("naive")
        while naive.steps < min(state.step, base_steps):
            naive.step()
        sampler.switch(None)
        if naive.steps == state.step and (state.step % eval_every == 0 or state.step == base_steps):
            naive.curve.append((naive.steps, naive.train_time, naive.evaluate()))
        print(
            f"  step {state.step}/{steps}: protege {state.train_time_s:.0f} s"
            + (f" val {state.val_curve[-1][1]:.3f}" if state.val_curve else "")
            + f" | naive {naive.steps} steps {naive.train_time:.0f} s"
            + (f" val {naive.curve[-1][2]:.3f}" if naive.curve else ""),
            flush=True,
        )
        sampler.switch("protege")

    with tempfile.TemporaryDirectory() as tmp, sampler:
        naive_val0 = naive.evaluate()
        naive.curve.append((0, 0.0, naive_val0))
        sampler.switch(None)
        rss0 = RssSampler.rss()
        sampler.switch("protege")
        res = train_adapter(
            "bfcl-simple",
            dataset=data,
            config=cfg,
            model=model,
            tokenizer=tok,
            run_dir=Path(tmp) / "adapter",
            on_step=interleave,
        )
        sampler.switch(None)
    m = res.metrics

    # answer tokens learned per second of training, each side over all the steps it ran
    p_ans_tokens = m["answer_tokens"]
    p_rate = p_ans_tokens / m["train_time_s"]
    n_rate = naive.answer_tokens / max(naive.train_time, 1e-9)
    p_vals = [v for _, _, v in protege_curve]
    n_vals = [v for s, _, v in naive.curve if s > 0]
    # The target is the best the naive loop reached. It may start lower: its
    # prompt keeps the format instructions, protege's pruned one has none and
    # must learn the format.
    target = min(n_vals) if n_vals else None
    tp = time_to(protege_curve, target) if target is not None else None
    tn = time_to(naive.curve, target) if target is not None else None
    precision = resolve_precision("auto", "cpu")

    rows = [
        (
            "setup",
            f"{precision}, LoRA r16 top8, grouped, answer-only, prefix pruned",
            "fp32, LoRA r16 all 30 blocks, random+pad, whole-sequence loss, prefix kept",
        ),
        (f"steps (batch {args.batch_size})", f"{m['steps']}", f"{naive.steps}"),
        ("train time", f"{m['train_time_s']:.1f} s", f"{naive.train_time:.1f} s"),
        (
            "mean prompt + answer tokens",
            f"{m['mean_prompt_tokens']:.0f} + {m['mean_answer_tokens']:.0f}",
            f"{statistics.mean(n for _, n in naive.train):.0f} + "
            f"{statistics.mean(len(s) - n for s, n in naive.train):.0f}",
        ),
        ("padding share", f"{m['padding_fraction']:.1%}", f"{1 - naive.tokens / max(1, naive.padded):.1%}"),
        (
            "tokens/s (real tokens)",
            f"{m['tokens_per_s']:.0f}",
            f"{naive.tokens / max(naive.train_time, 1e-9):.0f}",
        ),
        ("answer tokens learned/s", f"{p_rate:.1f}", f"{n_rate:.1f}"),
        (
            "val loss (first eval -> best)",
            f"{p_vals[0]:.3f} -> {min(p_vals):.3f}" if p_vals else "-",
            f"{n_vals[0]:.3f} -> {min(n_vals):.3f} (untrained {naive_val0:.3f})" if n_vals else "-",
        ),
        (
            f"time to naive's best val loss {target:.3f}" if target is not None else "time to same val loss",
            f"{tp:.1f} s" if tp is not None else f"not reached in {m['steps']} steps",
            f"{tn:.1f} s" if tn is not None else "not reached",
        ),
        (
            "peak RSS while training (over start)",
            f"{sampler.peak.get('protege', 0) / 2**20:.0f} MiB (+{(sampler.peak.get('protege', 0) - rss0) / 2**20:.0f})",
            f"{sampler.peak.get('naive', 0) / 2**20:.0f} MiB (+{(sampler.peak.get('naive', 0) - rss0) / 2**20:.0f})",
        ),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print()
    print(f"{'':{w0}}  {'protege':{w1}}  naive")
    for a, b, c in rows:
        print(f"{a:{w0}}  {b:{w1}}  {c}")
    ratio = p_rate / max(n_rate, 1e-9)
    print(f"\nanswer-token throughput: protege / naive = {ratio:.2f}x (target >= 3x)")
    if tp and tn:
        print(f"wall time to the same validation loss: naive / protege = {tn / tp:.2f}x")
    full_epoch_s = m["train_time_s"] * (math.ceil(n_train / args.batch_size) / max(1, m["steps"]))
    print(
        f"protege, {n_train} examples: {m['train_time_s'] / 60:.1f} min for {m['epochs_done']} epochs "
        f"({full_epoch_s / 60:.1f} min per epoch; target <= 15 min); base RSS before training {rss0 / 2**20:.0f} MiB"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "protege": {
                        **{k: v for k, v in m.items()},
                        "val_curve_time": protege_curve,
                        "peak_rss": sampler.peak.get("protege"),
                    },
                    "naive": {
                        "steps": naive.steps,
                        "train_time_s": naive.train_time,
                        "answer_tokens": naive.answer_tokens,
                        "tokens": naive.tokens,
                        "padded": naive.padded,
                        "val_curve_time": naive.curve,
                        "peak_rss": sampler.peak.get("naive"),
                    },
                    "answer_throughput_ratio": ratio,
                    "target_val_loss": target,
                    "time_to_target": [tp, tn],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
