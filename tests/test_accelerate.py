"""Multi-process training through ``accelerate launch`` and a config file the
user passes (here two CPU processes over gloo, the same code path as several
GPUs): both ranks train in step and one adapter is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
pytest.importorskip("peft")

# The config docs/gpu.md gives for two GPUs, as is: with no GPU here,
# accelerate's torchrun launcher starts two processes that meet over gloo.
CONFIG = (Path(__file__).resolve().parents[1] / "docs/accelerate/multi_gpu.yaml").read_text()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_one_adapter(tmp_path: Path) -> None:
    cfg = tmp_path / "accelerate.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PROTEGE_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               MASTER_ADDR="127.0.0.1")
    job = Path(__file__).with_name("_accelerate_job.py")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg),
           "--main_process_port", str(_free_port()), str(job), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    assert [x["world"] for x in ranks] == [2, 2]
    # Two ranks of one run (not two single-process runs): each trained its own shard.
    assert [(x["process_index"], x["num_processes"], x["main"]) for x in ranks] == [(0, 2, True), (1, 2, False)]
    # Gradients were all-reduced: both ranks hold the same trained adapter, moved from its zero init.
    assert ranks[0]["lora_b_digest"] == ranks[1]["lora_b_digest"]
    assert all(x["lora_b_moved"] for x in ranks) and ranks[0]["steps"] == 4
    # One run, one version directory, written by the main process only.
    versions = sorted(p.name for p in (tmp_path / "home/artifacts/adapters/weather").iterdir())
    assert versions == ["1"], (versions, ranks)
    assert ranks[0]["adapter_dir"] == ranks[1]["adapter_dir"]
    assert (Path(ranks[0]["adapter_dir"]) / "adapter_model.safetensors").exists()
