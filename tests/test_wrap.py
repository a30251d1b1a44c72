"""protege.wrap around the official openai SDK, against an in-process fake teacher."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

import protege
from protege.capture import wrap as wrap_mod

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]


def completion_body(request: dict[str, Any]) -> dict[str, Any]:
    text = request["messages"][-1]["content"]
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo: {text}", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        "x_vendor_field": {"kept": [1, 2]},
    }


def tool_chunks(include_usage: bool) -> list[dict[str, Any]]:
    """Two parallel tool calls, arguments cut across deltas and interleaved."""
    base = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1700000001, "model": "gpt-4o-mini-2024-07-18"}

    def c(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def tc(index: int, **kw: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **kw}]}

    chunks = [
        c({"role": "assistant", "content": None}),
        c(tc(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""})),
        c(tc(0, function={"arguments": '{"ci'})),
        c(tc(1, id="call_b", type="function", function={"name": "get_time", "arguments": '{"tz"'})),
        c(tc(0, function={"arguments": 'ty": "Paris"}'})),
        c(tc(1, function={"arguments": ': "CET"}'})),
        c({}, "tool_calls"),
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}})
    return chunks


def text_chunks() -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-s2", "object": "chat.completion.chunk", "created": 1700000002, "model": "m"}
    parts = ["Hel", "lo", " there"]
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    out += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in parts]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return out


def sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


class TeacherTransport:
    """An OpenAI-compatible fake: the model name picks the behaviour."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(request.headers)
        model = body.get("model", "")
        if model == "timeout":
            raise httpx.ReadTimeout("teacher too slow", request=request)
        if model.startswith("err-"):
            status = int(model.split("-")[1])
            return httpx.Response(status, json={"error": {"message": f"teacher says {status}", "type": "test_error", "code": None}})
        if body.get("stream"):
            if model == "midstream-error":
                chunks = text_chunks()[:2] + [{"error": {"message": "overloaded mid-stream", "type": "server_error"}}]
                content = sse(chunks, done=False)
            elif body.get("tools"):
                content = sse(tool_chunks(bool((body.get("stream_options") or {}).get("include_usage"))))
            else:
                content = sse(text_chunks())
            return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
        resp = completion_body(body)
        if (body.get("response_format") or {}).get("type") == "json_schema":
            resp["choices"][0]["message"]["content"] = json.dumps({"city": "Paris", "days": 3} if model != "bad-json" else {"x": 1})
        return httpx.Response(200, json=resp)


@pytest.fixture
def teacher() -> TeacherTransport:
    return TeacherTransport()


def sync_client(teacher: TeacherTransport) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test", base_url="http://teacher.test/v1", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(teacher)),
    )


def async_client(teacher: TeacherTransport) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test", base_url="http://teacher.test/v1", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(teacher)),
    )


def stored(store: Any, trace_id: str) -> Any:
    assert wrap_mod.flush(10)
    trace = store.get_trace(trace_id)
    assert trace is not None, "trace was not captured"
    return trace


def test_non_streaming_captured_verbatim(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store, client_id="app-1", session_id="run-7", task="summarise")
    assert isinstance(client, openai.OpenAI)
    messages = [{"role": "user", "content": "hello"}]
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0.2, extra_body={"x_custom": 1})
    messages.append({"role": "assistant", "content": "mutated after the call"})

    assert isinstance(resp, openai.types.chat.ChatCompletion)
    assert resp.choices[0].message.content == "echo: hello"
    assert "_protege_trace_id" not in resp.to_dict() and "_protege_trace_id" not in resp.model_dump_json()
    tid = client.last_trace_id
    assert wrap_mod.trace_id_of(resp) == tid
    t = stored(store, tid)
    assert t.response == completion_body(teacher.requests[0])  # teacher JSON, vendor field included
    assert t.request == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.2,
        "x_custom": 1,
    }
    assert teacher.requests[0]["x_custom"] == 1
    assert (t.source, t.client_id, t.session_id, t.task_tag) == ("sdk", "app-1", "run-7", "summarise")
    assert (t.status, t.http_status, t.finish_reason, t.stream) == ("ok", 200, "stop", False)
    assert (t.prompt_tokens, t.completion_tokens) == (11, 4)
    assert t.cost_usd is not None and t.cost_usd > 0
    assert t.latency_ms is not None and t.latency_ms > 0


def test_per_call_task_header_overrides_default(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store, task="default-task")
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
    first = client.last_trace_id
    client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "b"}],
        extra_headers={"X-Protege-Task": "classify", "X-Protege-Session": "s-9"},
    )
    second = client.last_trace_id
    assert first != second and first < second  # time-sortable ids
    assert stored(store, first).task_tag == "default-task"
    t2 = stored(store, second)
    assert (t2.task_tag, t2.session_id) == ("classify", "s-9")
    assert teacher.headers[1]["x-protege-task"] == "classify"  # headers still reach the teacher
    client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "c"}], user="end-user-3",
        metadata={"task": "from-metadata", "session_id": "s-meta"},
    )
    t3 = stored(store, client.last_trace_id)
    assert (t3.task_tag, t3.session_id, t3.client_id) == ("from-metadata", "s-meta", "end-user-3")


def test_streaming_parallel_tool_calls(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather and time"}],
        tools=TOOLS, stream=True, stream_options={"include_usage": True},
    )
    assert isinstance(stream, openai.Stream)
    tid = client.last_trace_id
    assert wrap_mod.trace_id_of(stream) == tid
    got = [chunk.to_dict() for chunk in stream]
    assert got == tool_chunks(True)  # chunks reach the caller unchanged

    t = stored(store, tid)
    msg = t.response["choices"][0]["message"]
    assert t.response["object"] == "chat.completion"
    assert msg["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
    ]
    assert t.response["usage"]["completion_tokens"] == 9
    assert t.tools_offered == ["get_weather", "get_time"]
    assert t.tools_called == ["get_weather", "get_time"]
    assert (t.status, t.finish_reason, t.stream) == ("ok", "tool_calls", True)
    assert t.ttft_ms is not None and t.latency_ms is not None and 0 < t.ttft_ms <= t.latency_ms
    assert t.request["stream"] is True and t.request["tools"] == TOOLS


def test_stream_closed_early_is_recorded_as_incomplete(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store)
    with client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True) as stream:
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
    t = stored(store, client.last_trace_id)
    assert t.status == "error" and "closed" in t.error
    assert t.meta["closed_early"] is True
    assert t.response["choices"][0]["message"]["role"] == "assistant"

    # Stopping once every choice has its finish_reason loses nothing: still ok.
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "y"}], stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            break
    stream.close()
    t = stored(store, client.last_trace_id)
    assert t.status == "ok" and t.response["choices"][0]["message"]["content"] == "Hello there"


def test_teacher_error_is_stored_then_reraised(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="err-429", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 429
    t = stored(store, client.last_trace_id)
    assert (t.status, t.http_status, t.response) == ("error", 429, None)
    assert "teacher says 429" in t.error
    assert t.meta["error"]["body"]["message"] == "teacher says 429"
    assert t.request["model"] == "err-429"


def test_timeout_is_stored_then_reraised(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="timeout", messages=[{"role": "user", "content": "x"}])
    t = stored(store, client.last_trace_id)
    assert (t.status, t.http_status, t.response) == ("error", None, None)
    assert t.error.startswith("APITimeoutError")


def test_error_in_the_middle_of_a_stream(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store)
    stream = client.chat.completions.create(model="midstream-error", messages=[{"role": "user", "content": "x"}], stream=True)
    seen = []
    with pytest.raises(openai.APIError, match="overloaded"):
        for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 2
    t = stored(store, client.last_trace_id)
    assert t.status == "error" and "overloaded mid-stream" in t.error
    assert t.response["choices"][0]["message"]["content"] == "Hel"  # what arrived before the failure


def test_with_raw_response_and_with_options(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store, task="raw")
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "r"}])
    assert raw.http_response.status_code == 200
    parsed = raw.parse()
    assert parsed.choices[0].message.content == "echo: r"
    tid = client.last_trace_id
    assert wrap_mod.trace_id_of(raw) == tid == wrap_mod.trace_id_of(parsed)
    assert stored(store, tid).response["id"] == "chatcmpl-abc"

    other = client.with_options(timeout=5)
    other.chat.completions.create(model="m", messages=[{"role": "user", "content": "copy"}])
    t = stored(store, other.last_trace_id)
    assert t.task_tag == "raw" and t.request["messages"][0]["content"] == "copy"
    # The SDK's own marker header is not added to what the caller asked for.
    assert all(h.get("x-stainless-raw-response") == "true" for h in teacher.headers)


def test_redact_hook_and_generator_messages(store, teacher):
    def redact(trace):
        trace.request["messages"] = [{**m, "content": m["content"].replace("secret", "[REDACTED]")} for m in trace.request["messages"]]
        return trace

    client = protege.wrap(sync_client(teacher), store=store, redact=redact)
    msgs = ({"role": "user", "content": f"my secret {i}"} for i in range(1))  # a one-shot iterable
    resp = client.chat.completions.create(model="m", messages=msgs)
    assert resp.choices[0].message.content == "echo: my secret 0"  # the teacher got the real text
    t = stored(store, client.last_trace_id)
    assert t.request["messages"] == [{"role": "user", "content": "my [REDACTED] 0"}]


async def test_async_client_non_streaming_and_streaming(store, teacher):
    client = protege.wrap(async_client(teacher), store=store, client_id="async-app")
    assert isinstance(client, openai.AsyncOpenAI)
    resp = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "echo: hi"
    t = stored(store, client.last_trace_id)
    assert t.response == completion_body(teacher.requests[0]) and t.client_id == "async-app"

    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}], tools=TOOLS, stream=True)
    assert isinstance(stream, openai.AsyncStream)
    got = [c.to_dict() async for c in stream]
    assert got == tool_chunks(False)
    t = stored(store, client.last_trace_id)
    assert [c["function"]["arguments"] for c in t.response["choices"][0]["message"]["tool_calls"]] == [
        '{"city": "Paris"}', '{"tz": "CET"}',
    ]
    assert t.ttft_ms is not None and t.stream

    async with await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "e"}], stream=True) as s:
        async for _ in s:
            break
    t = stored(store, client.last_trace_id)
    assert t.status == "error" and t.meta["closed_early"]

    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="err-500", messages=[{"role": "user", "content": "x"}])
    t = stored(store, client.last_trace_id)
    assert (t.status, t.http_status) == ("error", 500)


def test_sdk_feedback(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store, session_id="sess-1")
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "rate me"}])
    tid = stored(store, client.last_trace_id).id
    fb = protege.feedback(trace_id=tid, score=0.5, label="good", comment="fine", store=store)
    protege.feedback(session_id="sess-1", label="resolved", store=store)
    assert [f.id for f in store.feedback_for(trace_id=tid)] == [fb.id]
    got = store.feedback_for(trace_id=tid)[0]
    assert (got.score, got.label, got.comment) == (0.5, "good", "fine")
    assert store.feedback_for(session_id="sess-1")[0].label == "resolved"
    with pytest.raises(ValueError):
        protege.feedback(trace_id=tid, store=store)
    # Without a store argument it follows the last wrapped client.
    protege.feedback(trace_id=tid, score=1)
    assert len(store.feedback_for(trace_id=tid)) == 2


def test_wrap_rejects_other_objects(store):
    with pytest.raises(TypeError):
        protege.wrap(object(), store=store)


def test_spool_of_a_dead_process_is_replayed(tmp_path, teacher, _isolated_home):
    from protege.database import open_store

    url = f"sqlite:///{tmp_path / 'spool.db'}"
    store = open_store(url)
    # What a process that died while the store was down leaves behind.
    writer = wrap_mod._writer_for(store, None)
    writer.close()
    key = writer.spool_path.name.split("-")[1]
    orphan = writer.spool_path.with_name(f"sdk-{key}-999999999-0.jsonl")
    lost = protege.build_trace({"model": "m", "messages": []}, None, status="error", error="x", source="sdk")
    orphan.write_text(json.dumps(lost.to_dict()) + "\n")
    # ... and one that died in the middle of a replay.
    half = writer.spool_path.with_name(f"sdk-{key}-999999998-0.replaying")
    lost2 = protege.build_trace({"model": "m", "messages": []}, None, status="error", error="y", source="sdk")
    half.write_text(json.dumps(lost2.to_dict()) + "\n")
    client = protege.wrap(sync_client(teacher), store=store)
    client.protege.writer.replay()
    assert store.get_trace(lost.id) is not None and store.get_trace(lost2.id) is not None
    assert not orphan.exists() and not half.exists()


def test_raw_streaming_response(store, teacher):
    client = protege.wrap(sync_client(teacher), store=store)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "s"}], stream=True)
    stream = raw.parse()
    assert isinstance(stream, openai.Stream)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello there"
    t = stored(store, client.last_trace_id)
    assert t.response["choices"][0]["message"]["content"] == "Hello there" and t.status == "ok"


def test_structured_output_parse(store, teacher):
    from pydantic import BaseModel

    class Trip(BaseModel):
        city: str
        days: int

    client = protege.wrap(sync_client(teacher), store=store, task="plan")
    out = client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "plan"}], response_format=Trip)
    assert out.choices[0].message.parsed == Trip(city="Paris", days=3)
    t = stored(store, client.last_trace_id)
    assert t.request["response_format"]["type"] == "json_schema"
    assert t.request["response_format"]["json_schema"]["name"] == "Trip"
    assert json.loads(t.response["choices"][0]["message"]["content"]) == {"city": "Paris", "days": 3}
    assert teacher.requests[-1]["response_format"] == t.request["response_format"]

    # An answer that does not fit the schema is still a call: stored as an error, then raised.
    with pytest.raises(Exception) as info:
        client.chat.completions.parse(model="bad-json", messages=[{"role": "user", "content": "plan"}], response_format=Trip)
    t = stored(store, client.last_trace_id)
    assert t.status == "error" and type(info.value).__name__ in t.error
    assert json.loads(t.response["choices"][0]["message"]["content"]) == {"x": 1}  # the answer is kept
