"""bench/gpu.py's figure logic on CPU (the run itself needs a GPU machine):
percentiles, load figures, the served-vs-embedded comparison, the JSON kept
after a failed stage, bounded concurrency, and loud failure without vLLM."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protege.engines.engine import StudentAnswer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
REQ = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [WEATHER]}


def _answer(args: str, *, name: str = "get_weather") -> StudentAnswer:
    from protege.models.toolcall import parse_completion

    text = f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'
    msg = parse_completion(text)
    return StudentAnswer(message=msg, finish_reason="tool_calls", prompt_tokens=5, completion_tokens=9,
                         latency_ms=1.0, text=text)


def test_percentiles_and_load_figures(gpu):
    assert gpu.percentile([], 50) is None
    assert gpu.percentile([3.0], 99) == 3.0
    assert gpu.percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert gpu.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    figs = gpu.load_figures([10.0, 20.0, 30.0, 40.0], wall_s=2.0, errors=1)
    assert figs == {"requests": 5, "errors": 1, "requests_per_s": 2.0, "p50_ms": 25.0, "p99_ms": 39.7}


def test_compare_answers_counts_validity_and_agreement(gpu):
    reqs = [REQ] * 4
    served = [_answer('{"city": "Paris"}'), _answer('{"city": "Paris"}'), _answer('{"city":"Paris"}'), None]
    embedded = [_answer('{"city": "Paris"}'), _answer('{"city": "Oslo"}'), _answer('{"city": "Paris"}'),
                _answer('{}', name="delete_all")]
    out = gpu.compare_answers(reqs, served, embedded)
    # Three served answers valid (one engine failed); the embedded one inventing a tool is not.
    assert out["valid_served"] == 0.75 and out["valid_embedded"] == 0.75
    assert out["compared"] == 3
    # Same text once; the same calls twice (spacing differs, the call is the same); Oslo differs.
    assert out["same_text"] == pytest.approx(1 / 3, abs=1e-4) and out["same_calls"] == pytest.approx(2 / 3, abs=1e-4)
    assert len(out["differences"]) == 2 and "Oslo" in out["differences"][0]["embedded"]
    with pytest.raises(ValueError, match="as many"):
        gpu.compare_answers(reqs, served[:2], embedded)


def test_a_failed_stage_is_recorded_and_the_json_kept(gpu, tmp_path):
    figs = gpu.Figures(tmp_path / "gpu.json")
    assert figs.stage("ok", lambda: {"x": 1})

    def boom():
        raise RuntimeError("no card")

    assert not figs.stage("bad", boom)
    data = json.loads((tmp_path / "gpu.json").read_text())
    assert data["ok"]["x"] == 1 and "seconds" in data["ok"]
    assert data["bad"]["error"] == "RuntimeError: no card" and "boom" in data["bad"]["traceback"]


def test_drive_bounds_concurrency_and_counts_errors(gpu):
    state = {"now": 0, "max": 0}

    async def call(req):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        if req["i"] == 3:
            raise RuntimeError("down")
        return req["i"]

    answers, figs = asyncio.run(gpu.drive(call, [{"i": i} for i in range(20)], 4))
    assert state["max"] == 4
    assert answers[3] is None and answers[5] == 5
    assert figs["requests"] == 20 and figs["errors"] == 1 and figs["requests_per_s"] > 0


def test_serving_without_vllm_fails_loudly(gpu, tmp_path, monkeypatch):
    pytest.importorskip("bfcl_eval")
    real = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    out, ok = gpu.stage_serve({"smollm2_lora_gpu": {"adapter_dir": str(tmp_path)}}, True, 5)
    assert ok is False and "vLLM did not start" in out["error"] and "optional extra" in out["error"]
    with pytest.raises(RuntimeError, match="no SmolLM2 adapter"):
        gpu.stage_serve({"smollm2_lora_gpu": {"error": "OOM"}}, True, 5)


def test_the_scripts_refuse_a_machine_without_a_gpu(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = subprocess.run([sys.executable, str(ROOT / "bench/gpu.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no CUDA device" in r.stderr
    assert json.loads((tmp_path / "gpu.json").read_text())["error"] == "no CUDA device"
    env = dict(os.environ, OUT=str(tmp_path / "sh"), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(ROOT / "bench/gpu.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "no CUDA device" in (r.stdout + r.stderr)
    assert not (ROOT / ".venv-gpu").exists()  # it stopped before making a venv
