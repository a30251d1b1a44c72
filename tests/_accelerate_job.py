"""One process of the two-process training smoke test (tests/test_accelerate.py),
run by ``accelerate launch``: trains a tiny model's adapter with
``train_adapter`` and writes what this rank saw to ``<out>/rank<N>.json``."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def main(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from protege.models.tiny import build_tiny
    from protege.train import TaskData, TrainConfig, train_adapter

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    base = out / "base"
    if rank == 0:
        build_tiny(base)
    else:
        while not (base / "done").exists():  # rank 0 builds the tiny model once
            import time

            time.sleep(0.05)
    if rank == 0:
        (base / "done").write_text("")
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    cities = ["Paris", "Oslo", "Rome", "Lima", "Tokyo", "Cairo", "Quito", "Berlin"]
    rows = [{
        "id": f"r{i}", "messages": [{"role": "user", "content": f"weather in {c}?"}], "tools": [tool],
        "completion": {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"c{i}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": c})}}]},
        "meta": {},
    } for i, c in enumerate(cities * 2)]
    ds = TaskData(manifest={"task_id": "weather", "version": "v1", "hash": "sha256:smoke", "output_type": "tool_call",
                            "prefix": None}, train=rows[:12], validation=rows[12:])
    cfg = TrainConfig(base="tiny-llama", max_steps=4, batch_size=4, rank=4, layers="all", lr=1e-2,
                      eval_every=2, patience=0, seed=0, threads=1, device="cpu", precision="fp32")
    res = train_adapter(dataset=ds, config=cfg, model=model, tokenizer=tok)
    from accelerate import PartialState

    state = PartialState()
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for _, v in sorted(lora.items()))).hexdigest()
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": int(os.environ["WORLD_SIZE"]), "process_index": state.process_index,
        "num_processes": state.num_processes, "main": state.is_main_process, "adapter_dir": str(res.adapter_dir),
        "steps": res.metrics.get("steps"), "lora_b_digest": digest,
        "lora_b_moved": bool(lora) and all(float(v.abs().sum()) > 0 for v in lora.values()),
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
