"""The vLLM engine behind the gateway, against an in-process fake vLLM server:
adapters follow the registry through vLLM's dynamic-LoRA endpoints, every
completion carries the adapter name, the tool schemas' grammar and a logprobs
request, and when vLLM is down the teacher answers with the reason stored."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import openai
import pytest

pytest.importorskip("transformers")

from protege.capture.writer import WriterConfig  # noqa: E402
from protege.database import open_store  # noqa: E402
from protege.engines.engine import AdapterSpec, OpenAICompatEngine, logprob_signals  # noqa: E402
from protege.gateway.config import GatewayConfig  # noqa: E402
from protege.gateway.server import ServerThread  # noqa: E402
from protege.gateway.student import StudentPath  # noqa: E402
from protege.registry import Registry  # noqa: E402
from protege.router.routes import set_route  # noqa: E402
from protege.testing.fake_teacher_server import FakeTeacherServerThread  # noqa: E402
from protege.testing.fake_vllm import FakeVllmThread  # noqa: E402
from protege.testing.wait import wait_until  # noqa: E402

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MESSAGES = [{"role": "user", "content": "weather in Paris?"}]
GOOD = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    from protege.models.tiny import build_tiny

    return AutoTokenizer.from_pretrained(str(build_tiny(tmp_path_factory.mktemp("tiny"))))


def _adapter_dir(path: Path) -> Path:
    # The fake loads no weights; the gateway reads only the adapter's metadata.
    path.mkdir(parents=True)
    (path / "protege_adapter.json").write_text(json.dumps({"tools": ["get_weather"],
                                                           "config": {"max_new_tokens": 48}}))
    return path


def test_request_carries_grammar_logprobs_and_adapter(tokenizer):
    engine = OpenAICompatEngine("http://vllm.local", tokenizer, vllm=True)
    engine.load_adapter(AdapterSpec(name="weather", max_new_tokens=32))
    body = engine.request_body("weather", {"messages": MESSAGES, "tools": [WEATHER]})
    assert body["model"] == "weather" and body["max_tokens"] == 32 and body["temperature"] == 0
    assert body["logprobs"] == 2
    grammar = body["structured_outputs"]["grammar"]
    # The grammar names the offered tool and its schema, in the trained format.
    assert '"const": "get_weather"' in grammar and "<tool_call>" in grammar and '"required": ["city"]' in grammar
    # No tools, no response_format: any text is allowed, so no grammar is sent.
    assert "structured_outputs" not in engine.request_body("weather", {"messages": MESSAGES})
    old = OpenAICompatEngine("http://vllm.local", tokenizer, vllm=True, guided="guided_grammar")
    assert old.request_body("weather", {"messages": MESSAGES, "tools": [WEATHER]})["guided_grammar"] == grammar
    plain = OpenAICompatEngine("http://llama.local", tokenizer)  # not vLLM: no vLLM-only fields
    assert set(plain.request_body("x", {"messages": MESSAGES, "tools": [WEATHER]})) == {
        "model", "prompt", "max_tokens", "temperature", "logprobs"}
    with pytest.raises(ValueError, match="guided decoding field"):
        OpenAICompatEngine("http://vllm.local", tokenizer, guided="guided_json_schema")


def test_logprob_signals_match_the_embedded_engines():
    lp = {"token_logprobs": [math.log(0.9), math.log(0.5), None],
          "top_logprobs": [{"a": math.log(0.9), "b": math.log(0.05)}, {"c": math.log(0.5), "d": math.log(0.4)}]}
    sig = logprob_signals(lp)
    assert sig["min_prob"] == pytest.approx(0.5)
    assert sig["mean_logprob"] == pytest.approx((math.log(0.9) + math.log(0.5)) / 2)
    assert sig["min_margin"] == pytest.approx(0.1)
    # Without top logprobs there is no margin, and no tokens means no confidence at all.
    assert "min_margin" not in logprob_signals({"token_logprobs": [-0.1]})
    assert logprob_signals({"token_logprobs": []}) is None


@pytest.fixture
def stack(tmp_path: Path, tokenizer: Any):
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    store = open_store(db)
    reg = Registry(store)
    v1 = reg.register("weather", base_model="tiny", path=_adapter_dir(tmp_path / "v1"))
    reg.promote(v1.id, "test")
    set_route(store, "weather", "live")
    with FakeVllmThread(base="tiny", answers={"weather": GOOD}, token_prob=0.8) as vllm, FakeTeacherServerThread() as up:
        engine = OpenAICompatEngine(vllm.url, tokenizer, vllm=True, timeout_s=5)
        students = StudentPath(store, engine, poll_s=0.1, assign=lambda req, tag: (tag, 1.0) if tag else (None, None))
        cfg = GatewayConfig(teacher=up.url, db_url=db, gateway_keys=[], keys_file=tmp_path / "k.json",
                            capture=WriterConfig(spool_path=tmp_path / "spool.jsonl", flush_interval_s=0.01))
        from protege.gateway.app import create_app

        with ServerThread(app=create_app(cfg, store=store, students=students)) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-x", max_retries=0, timeout=30)
            yield {"client": client, "store": store, "reg": reg, "srv": srv, "vllm": vllm, "v1": v1,
                   "students": students, "tmp": tmp_path}
        students.close()
        engine.close()


def _ask(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER], extra_headers={"X-Protege-Task": "weather"})


def test_registry_drives_vllm_adapters_and_the_student_serves(stack):
    fake = stack["vllm"].fake
    # Promotion loaded the adapter under the task's name, from the registry's path.
    assert fake.loaded == {"weather": str(stack["tmp"] / "v1")}
    raw = _ask(stack["client"])
    assert raw.headers["x-protege-served-by"] == "student"
    call = raw.parse().choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = fake.sent("/v1/completions")[-1]
    assert sent["model"] == "weather" and sent["logprobs"] == 2 and sent["temperature"] == 0
    assert '"const": "get_weather"' in sent["structured_outputs"]["grammar"]
    assert "weather in Paris?" in sent["prompt"]
    # A new version replaces the old one under the same name (vLLM refuses a second load of a name).
    reg = stack["reg"]
    v2 = reg.register("weather", base_model="tiny", path=_adapter_dir(stack["tmp"] / "v2"))
    reg.promote(v2.id, "better")
    assert wait_until(lambda: fake.loaded.get("weather") == str(stack["tmp"] / "v2"))
    assert fake.sent("/v1/unload_lora_adapter")[-1] == {"lora_name": "weather"}
    assert _ask(stack["client"]).headers["x-protege-served-by"] == "student"
    # Retired: unloaded from vLLM, and the teacher answers the task again.
    reg.retire(v2.id, "demoted")
    assert wait_until(lambda: "weather" not in fake.loaded)
    assert _ask(stack["client"]).headers["x-protege-served-by"] == "teacher"


def test_vllm_down_falls_back_to_the_teacher_with_the_reason_stored(stack):
    stack["vllm"].stop()
    raw = _ask(stack["client"])
    assert raw.headers["x-protege-served-by"] == "fallback"
    # The client got the teacher's answer, transparently.
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "get_weather"
    assert stack["srv"].app.writer.flush(10)
    trace = stack["store"].get_trace(raw.headers["x-protege-trace-id"])
    assert trace.served_by == "fallback" and trace.task_id == "weather"
    assert "engine_error:ConnectError" in trace.fallback_reason
    assert trace.response["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    # A promotion while vLLM is down is not lost: the task stays with the teacher, the gateway keeps serving.
    reg = stack["reg"]
    v2 = reg.register("weather", base_model="tiny", path=_adapter_dir(stack["tmp"] / "v2"))
    reg.promote(v2.id, "while down")
    time.sleep(0.5)
    assert _ask(stack["client"]).headers["x-protege-served-by"] in ("fallback", "teacher")


def test_low_confidence_from_vllm_logprobs_goes_to_the_teacher(stack):
    reg, fake = stack["reg"], stack["vllm"].fake
    reg.update_metrics(stack["v1"].id, {"serving": {"min_confidence": 0.95, "signal": "min_prob"}})
    assert wait_until(lambda: stack["students"].router.promoted("weather").min_confidence == 0.95)
    raw = _ask(stack["client"])
    # Every token came back at p=0.8 < 0.95: the answer was valid, but not sure enough.
    assert raw.headers["x-protege-served-by"] == "fallback"
    assert stack["srv"].app.writer.flush(10)
    assert "low_confidence" in stack["store"].get_trace(raw.headers["x-protege-trace-id"]).fallback_reason
    assert fake.sent("/v1/completions")[-1]["logprobs"] == 2


def test_serve_cli_wires_the_vllm_engine(tmp_path: Path, tokenizer: Any):
    from click.testing import CliRunner

    from protege.cli.main import cli
    from protege.gateway.student import build_student_path

    out = CliRunner().invoke(cli, ["serve", "--teacher", "http://up.local/v1", "--students", "--engine", "vllm",
                                   "--vllm-url", "localhost:8000", "--db", f"sqlite:///{tmp_path / 'p.db'}"])
    assert out.exit_code != 0 and "--engine-url must be an http(s) URL, got 'localhost:8000'" in out.output
    assert "Traceback" not in out.output
    base = tmp_path / "tok"
    tokenizer.save_pretrained(str(base))
    cfg = GatewayConfig(teacher="http://up.local/v1", db_url=f"sqlite:///{tmp_path / 'p.db'}", students=True,
                        base_model=str(base), engine="openai", engine_url="http://vllm.local:8000/v1",
                        engine_vllm=True, engine_guided="guided_grammar", route_poll_s=60)
    store = open_store(cfg.db_url)
    path = build_student_path(cfg, store)
    try:
        engine = path.engine
        assert isinstance(engine, OpenAICompatEngine) and engine.vllm and engine.guided == "guided_grammar"
        assert engine.base_url == "http://vllm.local:8000"  # /v1 is the engine's to add
    finally:
        path.close()
        store.close()


def test_logprob_signals_judge_a_text_answer_by_its_first_step() -> None:
    lp = {"token_logprobs": [math.log(0.7), math.log(0.3)],
          "top_logprobs": [{"Sure": math.log(0.7), "<": math.log(0.2)}, {"x": math.log(0.3), "y": math.log(0.3)}]}
    assert logprob_signals(lp, text=True)["judged_min_prob"] == pytest.approx(0.8)
    assert logprob_signals(lp, text=False)["judged_min_prob"] == pytest.approx(0.3)
    # No opener among the listed tokens: it is taken as likely as the least listed one.
    lp["top_logprobs"][0] = {"Sure": math.log(0.7), "OK": math.log(0.1)}
    assert logprob_signals(lp, text=True)["judged_min_prob"] == pytest.approx(0.9)
