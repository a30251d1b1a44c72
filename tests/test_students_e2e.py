"""Students behind the gateway, end to end with the official openai SDK: a
promoted tiny-model adapter serves its task, an invalid student answer falls
back to the teacher, shadow mode stores agreement, a rollback takes effect
without a restart, and streaming with tool calls works from both sides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa

torch = pytest.importorskip("torch")

from protege.capture.writer import WriterConfig  # noqa: E402
from protege.database import open_store  # noqa: E402
from protege.engines.engine import EmbeddedEngine  # noqa: E402
from protege.gateway.config import GatewayConfig  # noqa: E402
from protege.gateway.server import ServerThread  # noqa: E402
from protege.gateway.student import StudentPath, agree  # noqa: E402
from protege.registry import Registry  # noqa: E402
from protege.router.migrations import shadow_results  # noqa: E402
from protege.router.routes import set_route  # noqa: E402
from protege.testing.fake_teacher_server import FakeTeacherServerThread  # noqa: E402
from protege.testing.wait import wait_until  # noqa: E402

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MESSAGES = [{"role": "user", "content": "weather in Paris?"}]


def _train_adapter(base_dir: Path, out: Path, answer: dict[str, Any], seed: int) -> Path:
    """Overfit a LoRA adapter on one example so the tiny model reliably says ``answer``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from protege.models.toolcall import build_prompt, render_answer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]))
    prompt = tok(build_prompt(MESSAGES, [WEATHER], tok), add_special_tokens=False)["input_ids"]
    target = tok(render_answer(answer, tok), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + target])
    labels = torch.tensor([[-100] * len(prompt) + target])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    # The tiny model's logits stay flat (small tied embeddings), so the loss
    # stays high; what matters is that greedy decoding now says ``answer``.
    for _ in range(120):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        out_ids = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=len(target), do_sample=False)
    assert out_ids[0, len(prompt):].tolist() == target, "the tiny adapter did not learn its answer"
    model.save_pretrained(str(out))
    (out / "protege_adapter.json").write_text(json.dumps({"tools": ["get_weather"], "config": {"max_new_tokens": 48}}))
    return out


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from protege.models.tiny import build_tiny

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains faster without thread hand-offs
    root = tmp_path_factory.mktemp("students")
    base = build_tiny(root / "base", hidden_size=64, layers=2)
    good = _train_adapter(base, root / "good", _call("get_weather", {"city": "Paris"}), 0)
    bad = _train_adapter(base, root / "bad", _call("delete_everything", {"city": "Paris"}), 1)
    torch.set_num_threads(threads)
    return {"base": base, "good": good, "bad": bad}


@pytest.fixture
def stack(tmp_path: Path, adapters: dict[str, Path]):
    from protege.models.loader import load_base

    db = f"sqlite:///{tmp_path / 'gw.db'}"
    store = open_store(db)
    reg = Registry(store)
    good = reg.register("weather", base_model="tiny", path=adapters["good"])
    reg.promote(good.id, "test")
    set_route(store, "weather", "live")
    # Unconstrained names, so that a bad student's invented tool reaches validation.
    engine = EmbeddedEngine(load_base(str(adapters["base"])), max_batch=4, max_wait_ms=2, max_new_tokens=48,
                            constrain=False)
    students = StudentPath(store, engine, poll_s=0.1, assign=lambda req, tag: (tag, 1.0) if tag else (None, None))
    with FakeTeacherServerThread() as up:
        cfg = GatewayConfig(teacher=up.url, db_url=db, gateway_keys=[], keys_file=tmp_path / "k.json",
                            capture=WriterConfig(spool_path=tmp_path / "spool.jsonl", flush_interval_s=0.01))
        from protege.gateway.app import create_app

        with ServerThread(app=create_app(cfg, store=store, students=students)) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-x", max_retries=0, timeout=30)
            yield {"client": client, "store": store, "reg": reg, "srv": srv, "good": good, "adapters": adapters,
                   "students": students}
    students.close()
    engine.close()


def _ask(client: openai.OpenAI, **kw: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER], extra_headers={"X-Protege-Task": "weather"}, **kw
    )


def _trace(stack: dict[str, Any], raw: Any) -> Any:
    assert stack["srv"].app.writer.flush(10)
    return stack["store"].get_trace(raw.headers["x-protege-trace-id"])


def test_promoted_student_serves_and_streams(stack):
    raw = _ask(stack["client"])
    assert raw.headers["x-protege-served-by"] == "student"
    msg = raw.parse().choices[0].message
    assert msg.tool_calls[0].function.name == "get_weather"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
    t = _trace(stack, raw)
    assert (t.served_by, t.task_id, t.adapter) == ("student", "weather", stack["good"].ref)
    # Streaming: held until validated, then sent as proper SSE tool-call deltas.
    chunks = list(stack["client"].chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER], stream=True,
        extra_headers={"X-Protege-Task": "weather"}))
    name = "".join(c.choices[0].delta.tool_calls[0].function.name or "" for c in chunks
                   if c.choices and c.choices[0].delta.tool_calls)
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks
                   if c.choices and c.choices[0].delta.tool_calls)
    assert name == "get_weather" and json.loads(args) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_invalid_student_answer_falls_back_and_rollback_restores(stack):
    reg, adapters = stack["reg"], stack["adapters"]
    bad = reg.register("weather", base_model="tiny", path=adapters["bad"])
    reg.promote(bad.id, "test")
    assert wait_until(lambda: stack["students"].router.promoted("weather").adapter == bad.ref)
    raw = _ask(stack["client"])
    assert raw.headers["x-protege-served-by"] == "fallback"
    # The client got the teacher's answer, transparently.
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "get_weather"
    t = _trace(stack, raw)
    assert t.served_by == "fallback" and "unknown_tool:delete_everything" in t.fallback_reason
    # The teacher's stream passes straight through on fallback too.
    chunks = list(stack["client"].chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER], stream=True,
        extra_headers={"X-Protege-Task": "weather"}))
    assert any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    # Rollback: the previous adapter serves again, no restart.
    reg.rollback("weather", "bad answers")
    assert wait_until(lambda: stack["students"].router.promoted("weather").adapter == stack["good"].ref)
    assert _ask(stack["client"]).headers["x-protege-served-by"] == "student"
    metrics = stack["client"]._client.get(str(stack["client"].base_url).replace("/v1/", "/metrics")).text
    assert 'protege_gateway_fallbacks_total{reason="unknown_tool' in metrics
    assert "protege_router_decision_seconds" in metrics


def test_shadow_mode_stores_agreement_and_route_off(stack):
    set_route(stack["store"], "weather", "shadow")
    assert wait_until(lambda: stack["students"].routes.get("weather").mode == "shadow")
    raw = _ask(stack["client"])
    assert raw.headers["x-protege-served-by"] == "teacher"
    trace_id = raw.headers["x-protege-trace-id"]

    def stored() -> Any:
        with stack["store"].engine.connect() as conn:
            return conn.execute(sa.select(shadow_results).where(shadow_results.c.trace_id == trace_id)).first()

    assert wait_until(lambda: stored() is not None)
    row = stored()
    assert row.valid == 1 and row.agree in (0, 1) and row.task_id == "weather"
    teacher = raw.parse().choices[0].message.model_dump()
    assert row.agree == int(agree(json.loads(row.student_response), teacher))
    # A streamed teacher answer is compared too (reassembled off the request path).
    with stack["client"].chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER], stream=True,
        extra_headers={"X-Protege-Task": "weather"},
    ) as resp:
        streamed_id = resp.headers["x-protege-trace-id"]
        list(resp.iter_lines())
    trace_id = streamed_id
    assert wait_until(lambda: stored() is not None)
    assert stored().agree in (0, 1)
    set_route(stack["store"], "weather", "off")
    assert wait_until(lambda: stack["students"].routes.get("weather").mode == "off")
    assert _ask(stack["client"]).headers["x-protege-served-by"] == "teacher"


def test_agree():
    a = _call("f", {"x": 1, "y": 2})
    b = _call("f", {"y": 2, "x": 1})
    assert agree(a, b) and not agree(a, _call("f", {"x": 2}))
    assert agree({"content": " Hello  World"}, {"content": "hello world"})
    assert agree({"content": '{"a": 1}'}, {"content": '{ "a" : 1 }'})


def test_ui_is_behind_the_gateway_keys(tmp_path):
    import httpx

    from protege.gateway.app import create_app

    cfg = GatewayConfig(teacher="http://127.0.0.1:9/v1", db_url=f"sqlite:///{tmp_path / 'k.db'}",
                        gateway_keys=["sk-gw-secret"], keys_file=tmp_path / "k.json",
                        capture=WriterConfig(spool_path=tmp_path / "spool.jsonl"))
    with ServerThread(app=create_app(cfg)) as srv:
        denied = httpx.get(srv.url + "/ui/traces")
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(srv.url + "/ui/traces", auth=("any", "sk-wrong")).status_code == 401
        assert httpx.get(srv.url + "/ui/traces", auth=("any", "sk-gw-secret")).status_code == 200
        assert httpx.get(srv.url + "/ui/traces", headers={"X-Protege-Key": "sk-gw-secret"}).status_code == 200


def test_confidence_floor_defers_unsure_answers_to_the_teacher(stack):
    reg, store = stack["reg"], stack["store"]
    engine = stack["students"].engine
    (ans,) = engine.generate_sync("weather", [{"messages": MESSAGES, "tools": [WEATHER]}])
    assert ans.confidence is not None and 0.0 < ans.confidence <= 1.0
    # A floor above the answer's confidence: the teacher answers, the trace says why.
    reg.update_metrics(stack["good"].id, {"serving": {"min_confidence": min(1.0, ans.confidence + 1e-3)}})
    assert wait_until(lambda: stack["students"].router.promoted("weather").min_confidence is not None)
    raw = _ask(stack["client"])
    assert raw.headers["x-protege-served-by"] == "fallback"
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "get_weather"
    t = _trace(stack, raw)
    assert t.fallback_reason == "low_confidence"
    from protege.flywheel.drift import served_counts

    assert served_counts(store, "weather", 0.0).get("deferred") == 1  # not a validation failure
    # At or under the answer's confidence the student serves again.
    reg.update_metrics(stack["good"].id, {"serving": {"min_confidence": ans.confidence * 0.99}})
    assert wait_until(lambda: (stack["students"].router.promoted("weather").min_confidence or 1.0) < ans.confidence)
    assert _ask(stack["client"]).headers["x-protege-served-by"] == "student"


def test_tool_name_constraint_keeps_a_student_on_offered_tools(adapters):
    from protege.engines.engine import AdapterSpec
    from protege.models.constrain import open_name
    from protege.models.loader import load_base

    assert open_name('<tool_call>\n{"name": "get_wea') == "get_wea"
    assert open_name('{"name": "x') is None  # not inside a call
    assert open_name('<tool_call>\n{"name": "get_weather", "arg') is None
    engine = EmbeddedEngine(load_base(str(adapters["base"])), max_batch=2, max_wait_ms=2, max_new_tokens=48)
    try:
        engine.load_adapter(AdapterSpec.from_dir("bad", adapters["bad"]))
        # Alone, this adapter writes delete_everything; offered only get_weather, it cannot.
        # (The overfit tiny model garbles what follows; validation would refuse that.)
        (ans,) = engine.generate_sync("bad", [{"messages": MESSAGES, "tools": [WEATHER]}])
        assert ans.text.startswith('<tool_call>\n{"name": "get_weather"'), ans.text
    finally:
        engine.close()


def test_tool_name_constraint_masks_all_but_offered_names():
    import tempfile

    from transformers import AutoTokenizer

    from protege.models.constrain import tool_name_constraint
    from protege.models.tiny import build_tiny

    with tempfile.TemporaryDirectory() as d:
        tok = AutoTokenizer.from_pretrained(str(build_tiny(Path(d) / "m", hidden_size=32, layers=1)))
    prompt = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    partial = tok('<tool_call>\n{"name": "get_', add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + partial, prompt + partial])
    scores = torch.zeros((2, len(tok)))
    bad = tok("delete", add_special_tokens=False)["input_ids"][0]
    scores[:, bad] = 10.0  # the model would rather write get_delete...
    proc = tool_name_constraint(tok, [["get_weather", "get_time"], None], len(prompt))
    out = proc(ids, scores.clone())
    best = int(out[0].argmax())
    assert tok.decode([best]) and ("weather".startswith(tok.decode([best])) or "time".startswith(tok.decode([best])))
    assert torch.isinf(out[0, bad]) and out[0].isfinite().sum() <= 64
    assert torch.equal(out[1], scores[1])  # no names offered: untouched
    # Outside a call's name nothing is masked.
    args = tok('<tool_call>\n{"name": "get_time", "arguments": {', add_special_tokens=False)["input_ids"]
    out2 = proc(torch.tensor([prompt + args]), scores[:1].clone())
    assert torch.equal(out2[0], scores[0])


def test_agree_reads_arguments_as_the_schema_does():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "n": {"type": "number"}, "unit": {"type": "string", "default": "celsius"}}}}}]
    # 5 and 5.0 are one number; an omitted optional argument is its default.
    assert agree(_call("f", {"n": 5}), _call("f", {"n": 5.0, "unit": "celsius"}), tools)
    assert not agree(_call("f", {"n": 5}), _call("f", {"n": 5.0, "unit": "kelvin"}), tools)
    # Parallel calls in any order; a missing call is a difference.
    two = {"tool_calls": _call("f", {"n": 1})["tool_calls"] + _call("f", {"n": 2})["tool_calls"]}
    owt = {"tool_calls": list(reversed(two["tool_calls"]))}
    assert agree(two, owt, tools) and not agree(two, _call("f", {"n": 1}), tools)
