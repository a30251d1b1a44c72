"""The capture gateway, driven by the official openai SDK against a fake
teacher on loopback: what the client sees and what the store keeps."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from protege.capture.writer import WriterConfig
from protege.database import open_store
from protege.gateway.config import GatewayConfig
from protege.gateway.server import ServerThread
from protege.testing.fake_teacher_server import FakeTeacherServerThread, completion
from protege.testing.wait import wait_until

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}},
                       "required": ["tz"]},
    },
}
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "weather in Paris?"}]


@pytest.fixture(scope="module")
def teacher() -> Iterator[FakeTeacherServerThread]:
    with FakeTeacherServerThread(slow_s=3.0) as up:
        yield up


def _config(tmp_path: Path, teacher_url: str, db_url: str | None = None, **kw: Any) -> GatewayConfig:
    capture = kw.pop("capture", None) or WriterConfig(spool_path=tmp_path / "spool" / "traces.jsonl",
                                                      retry_interval_s=0.1, flush_interval_s=0.01)
    return GatewayConfig(teacher=teacher_url, db_url=db_url or f"sqlite:///{tmp_path / 'gw.db'}",
                         capture=capture, gateway_keys=kw.pop("gateway_keys", []),
                         keys_file=tmp_path / "keys.json", **kw)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gw.db'}"


@pytest.fixture
def gateway(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str) -> Iterator[ServerThread]:
    with ServerThread(_config(tmp_path, teacher.url, store_url)) as srv:
        yield srv


def _client(srv: ServerThread, **kw: Any) -> openai.OpenAI:
    kw.setdefault("api_key", "sk-client-key")
    return openai.OpenAI(base_url=srv.url + "/v1", max_retries=0, timeout=10, **kw)


def _stored(srv: ServerThread, store_url: str, trace_id: str) -> Any:
    assert srv.app.writer is not None and srv.app.writer.flush(10)
    store = open_store(store_url)
    try:
        trace = store.get_trace(trace_id)
    finally:
        store.close()
    assert trace is not None, f"trace {trace_id} was not stored"
    return trace


def test_non_streaming_roundtrip_and_capture(gateway: ServerThread, teacher: FakeTeacherServerThread,
                                            store_url: str) -> None:
    client = _client(gateway)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, user="alice", temperature=0.2,
        extra_body={"vendor_knob": {"depth": 3}},
        extra_headers={"X-Protege-Task": "weather", "X-Protege-Session": "run-1"},
    )
    trace_id = raw.headers["x-protege-trace-id"]
    reply = raw.parse()
    assert reply.choices[0].message.content == "Sure. You said: weather in Paris?"
    # The client's body reaches the teacher byte for byte, unknown fields included.
    sent = orjson.loads(teacher.server.last_body)
    assert sent["vendor_knob"] == {"depth": 3} and sent["temperature"] == 0.2
    assert teacher.server.last_headers[b"authorization"] == b"Bearer sk-client-key"

    trace = _stored(gateway, store_url, trace_id)
    assert trace.status == "ok" and trace.http_status == 200 and not trace.stream
    assert trace.request == sent
    assert trace.response == json.loads(raw.http_response.content)
    assert trace.task_tag == "weather" and trace.session_id == "run-1" and trace.client_id == "alice"
    assert trace.model == "gpt-4o-mini" and trace.finish_reason == "stop"
    assert trace.prompt_tokens == reply.usage.prompt_tokens and trace.completion_tokens == reply.usage.completion_tokens
    assert trace.latency_ms is not None and trace.latency_ms > 0
    assert trace.source == "gateway" and trace.served_by == "teacher"


def test_streaming_text_with_usage(gateway: ServerThread, store_url: str) -> None:
    client = _client(gateway)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
        extra_headers={"X-Protege-Client": "agent-7"},
    ) as resp:
        trace_id = resp.headers["x-protege-trace-id"]
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage]
    assert text == "Sure. You said: weather in Paris?"
    assert len(usage) == 1

    trace = _stored(gateway, store_url, trace_id)
    assert trace.stream and trace.status == "ok" and trace.client_id == "agent-7"
    msg = trace.response["choices"][0]["message"]
    assert msg["content"] == text and trace.response["object"] == "chat.completion"
    assert trace.prompt_tokens == usage[0].prompt_tokens and trace.completion_tokens == usage[0].completion_tokens
    assert trace.ttft_ms is not None and 0 < trace.ttft_ms <= trace.latency_ms


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("parallel", [False, True], ids=["single", "parallel"])
def test_tool_calls_reassembled(gateway: ServerThread, store_url: str, stream: bool, parallel: bool) -> None:
    client = _client(gateway)
    request = {"model": "gpt-4o", "messages": MESSAGES, "tools": [WEATHER, CLOCK], "tool_choice": "auto",
               "parallel_tool_calls": parallel}
    expected = completion(request)["choices"][0]["message"]["tool_calls"]
    assert len(expected) == (2 if parallel else 1)
    if stream:
        with client.chat.completions.with_streaming_response.create(**request, stream=True) as resp:
            trace_id = resp.headers["x-protege-trace-id"]
            chunks = list(resp.parse())
        # The client got fragments: arguments split over several deltas, interleaved.
        fragments = [tc for c in chunks for ch in c.choices for tc in (ch.delta.tool_calls or [])]
        assert len(fragments) > len(expected)
    else:
        raw = client.chat.completions.with_raw_response.create(**request)
        trace_id = raw.headers["x-protege-trace-id"]
        assert [tc.function.name for tc in raw.parse().choices[0].message.tool_calls] == [
            e["function"]["name"] for e in expected]

    trace = _stored(gateway, store_url, trace_id)
    got = trace.response["choices"][0]["message"]["tool_calls"]
    assert [(g["id"], g["function"]["name"], json.loads(g["function"]["arguments"])) for g in got] == [
        (e["id"], e["function"]["name"], json.loads(e["function"]["arguments"])) for e in expected]
    assert trace.tools_offered == ["get_weather", "get_time"]
    assert trace.tools_called == [e["function"]["name"] for e in expected]
    assert trace.finish_reason == "tool_calls"
    assert trace.request["parallel_tool_calls"] is parallel


def test_response_format_and_n(gateway: ServerThread, teacher: FakeTeacherServerThread, store_url: str) -> None:
    client = _client(gateway)
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, response_format=schema, n=3)
    reply = raw.parse()
    assert orjson.loads(teacher.server.last_body)["response_format"] == schema
    assert [json.loads(c.message.content)["choice"] for c in reply.choices] == [0, 1, 2]
    trace = _stored(gateway, store_url, raw.headers["x-protege-trace-id"])
    assert len(trace.response["choices"]) == 3

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, response_format=schema, n=2, stream=True,
    ) as resp:
        trace_id = resp.headers["x-protege-trace-id"]
        list(resp.parse())
    trace = _stored(gateway, store_url, trace_id)
    contents = [c["message"]["content"] for c in trace.response["choices"]]
    assert [json.loads(c)["choice"] for c in contents] == [0, 1]


@pytest.mark.parametrize(("status", "exc"), [(400, openai.BadRequestError), (429, openai.RateLimitError),
                                             (500, openai.InternalServerError)])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_teacher_errors_pass_through(gateway: ServerThread, store_url: str, status: int, exc: type,
                                      stream: bool) -> None:
    client = _client(gateway)
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=f"fake-error-{status}", messages=MESSAGES, stream=stream)
    assert info.value.status_code == status
    assert info.value.body["message"] == f"fake teacher failure {status}"
    trace = _stored(gateway, store_url, info.value.response.headers["x-protege-trace-id"])
    assert trace.status == "error" and trace.http_status == status
    assert f"fake teacher failure {status}" in trace.error and trace.response is None


def test_teacher_timeout_is_504(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str) -> None:
    with ServerThread(_config(tmp_path, teacher.url, store_url, timeout_s=0.3)) as srv:
        with pytest.raises(openai.APIStatusError) as info:
            _client(srv).chat.completions.create(model="fake-slow", messages=MESSAGES)
        assert info.value.status_code == 504
        assert info.value.body["code"] == "upstream_timeout"  # the code clients already match on
        trace = _stored(srv, store_url, info.value.response.headers["x-protege-trace-id"])
        # The metric keeps the name dashboards scrape.
        assert 'protege_gateway_upstream_errors_total{kind="timeout"} 1.0' in httpx.get(srv.url + "/metrics").text
    assert trace.status == "error" and trace.http_status == 504 and "timed out" in trace.error


@pytest.mark.parametrize("client_kind", ["httpx", "aiohttp"])
def test_connection_refused_is_502(tmp_path: Path, store_url: str, client_kind: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    cfg = _config(tmp_path, f"http://127.0.0.1:{port}/v1", store_url, client=client_kind)
    with ServerThread(cfg) as srv:
        with pytest.raises(openai.APIStatusError) as info:
            _client(srv).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        assert info.value.status_code == 502
        trace = _stored(srv, store_url, info.value.response.headers["x-protege-trace-id"])
    assert trace.status == "error" and trace.http_status == 502 and trace.stream


@pytest.mark.parametrize("client_kind", ["httpx", "aiohttp"])
def test_midstream_failure_ends_with_error_event(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str,
                                                 client_kind: str) -> None:
    with ServerThread(_config(tmp_path, teacher.url, store_url, client=client_kind)) as srv:
        client = _client(srv)
        got: list[Any] = []
        with client.chat.completions.with_streaming_response.create(
            model="fake-break", messages=MESSAGES, stream=True,
        ) as resp:
            trace_id = resp.headers["x-protege-trace-id"]
            with pytest.raises(openai.APIError):
                for chunk in resp.parse():
                    got.append(chunk)
        assert got, "the first half of the stream reached the client"
        assert all(ch.finish_reason is None for c in got for ch in c.choices)
        trace = _stored(srv, store_url, trace_id)
        assert trace.status == "error" and trace.error
        assert trace.response["choices"][0]["finish_reason"] is None  # the partial answer is kept

        # Non-streaming: a body cut short is a 502, also stored.
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="fake-break", messages=MESSAGES)
        assert info.value.status_code == 502
        assert _stored(srv, store_url, info.value.response.headers["x-protege-trace-id"]).status == "error"


def test_injected_transport_stream_breaks(tmp_path: Path, store_url: str) -> None:
    """Tests can replace the network with an httpx transport; a read error
    after two events still ends the client's stream with an error event."""

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[override]
            yield b'data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"He"}}]}\n\n'
            yield b'data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"llo"}}]}\n\n'
            raise httpx.ReadError("connection reset by peer")

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken())

    cfg = _config(tmp_path, "http://teacher.invalid/v1", store_url)
    with ServerThread(cfg, transport=httpx.MockTransport(handler)) as srv:
        with pytest.raises(openai.APIError, match="connection reset"):
            for _ in _client(srv).chat.completions.create(model="m", messages=MESSAGES, stream=True):
                pass
        traces = open_store(store_url)
        assert srv.app.writer.flush(10)
        [trace] = traces.list_traces()
    assert str(seen[0].url) == "http://teacher.invalid/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-client-key"
    assert trace.status == "error" and "connection reset" in trace.error
    assert trace.response["choices"][0]["message"]["content"] == "Hello"


def test_compressed_teacher_answer(tmp_path: Path, store_url: str) -> None:
    """A teacher that gzips despite Accept-Encoding: identity: the client still
    gets a readable answer and the trace holds the decoded completion."""
    import gzip

    class Body(httpx.AsyncByteStream):
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def __aiter__(self):  # type: ignore[override]
            yield self.data[:10]
            yield self.data[10:]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "identity"
        body = gzip.compress(orjson.dumps(completion(orjson.loads(request.content))))
        return httpx.Response(200, headers={"content-type": "application/json", "content-encoding": "gzip"},
                              stream=Body(body))

    cfg = _config(tmp_path, "http://teacher.invalid/v1", store_url)
    with ServerThread(cfg, transport=httpx.MockTransport(handler)) as srv:
        raw = _client(srv).chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == "Sure. You said: weather in Paris?"
        trace = _stored(srv, store_url, raw.headers["x-protege-trace-id"])
    assert trace.status == "ok" and trace.response["choices"][0]["message"]["content"].startswith("Sure.")


def test_malformed_and_invalid_requests_are_400(gateway: ServerThread, teacher: FakeTeacherServerThread,
                                                store_url: str) -> None:
    before = teacher.server.requests
    url = gateway.url + "/v1/chat/completions"
    cases = [(b"{not json", None), (b"[1, 2]", None), (b'{"messages": []}', "model"),
             (b'{"model": "m", "messages": "hi"}', "messages"), (b'{"model": "m", "messages": [], "stream": "y"}', "stream")]
    ids = []
    for body, param in cases:
        r = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["type"] == "invalid_request_error" and err["param"] == param
        ids.append(r.headers["x-protege-trace-id"])
    assert teacher.server.requests == before, "invalid requests never reach the teacher"
    for trace_id in ids:
        trace = _stored(gateway, store_url, trace_id)
        assert trace.status == "error" and trace.http_status == 400


class FlakyStore:
    """A real store whose writes fail while ``down`` is set."""

    def __init__(self, url: str) -> None:
        self.inner = open_store(url)
        self.down = False
        self.failures = 0

    def add_traces(self, traces: list[Any]) -> int:
        if self.down:
            self.failures += 1
            raise ConnectionError("database is unreachable")
        return self.inner.add_traces(traces)

    def add_feedback(self, fb: Any) -> Any:
        return self.inner.add_feedback(fb)


def test_store_outage_spools_and_replays(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str) -> None:
    flaky = FlakyStore(store_url)
    flaky.down = True
    ids: list[str] = []
    with ServerThread(_config(tmp_path, teacher.url, store_url), store=flaky) as srv:
        client = _client(srv)
        for i in range(12):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}], stream=i % 2 == 1)
            ids.append(raw.headers["x-protege-trace-id"])
        assert srv.app.writer.flush(10)
        health = httpx.get(srv.url + "/health").json()
        assert health["status"] == "degraded" and health["capture"]["spooled"] == 12
        assert flaky.failures >= 1 and flaky.inner.count_traces() == 0
        metrics = httpx.get(srv.url + "/metrics").text
        assert "protege_capture_spooled_total 12.0" in metrics
        flaky.down = False  # the database is back
        assert wait_until(lambda: flaky.inner.count_traces() == 12)
        assert httpx.get(srv.url + "/health").json()["status"] == "ok"
    assert sorted(t.id for t in flaky.inner.iter_traces()) == sorted(ids)
    assert all(f.stat().st_size == 0 for f in (tmp_path / "spool").glob("*.jsonl"))
    assert not any((tmp_path / "spool" / "traces.journal").iterdir())  # the journal goes at a clean stop


def test_spool_survives_restart(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str) -> None:
    flaky = FlakyStore(store_url)
    flaky.down = True
    ids = []
    with ServerThread(_config(tmp_path, teacher.url, store_url), store=flaky) as srv:
        for i in range(5):
            raw = _client(srv).chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"r{i}"}])
            ids.append(raw.headers["x-protege-trace-id"])
    # Shut down while the store was still down: everything is in the spool.
    assert flaky.inner.count_traces() == 0
    spooled = [line for f in (tmp_path / "spool").iterdir() if f.suffix in (".jsonl", ".replaying")
               for line in f.read_text().splitlines()]
    assert sorted(json.loads(line)["id"] for line in spooled) == sorted(ids)
    flaky.down = False
    with ServerThread(_config(tmp_path, teacher.url, store_url), store=flaky):
        assert wait_until(lambda: flaky.inner.count_traces() == 5)
    assert sorted(t.id for t in flaky.inner.iter_traces()) == sorted(ids)


def test_postgres_store_unreachable_then_back(tmp_path: Path, teacher: FakeTeacherServerThread, pg_url: str) -> None:
    """A real PostgreSQL store: the gateway starts against a dead address and
    spools; once the store answers again, every trace is there."""

    class SwappableStore:
        def __init__(self) -> None:
            self.url = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"
            self._store: Any = None

        def add_traces(self, traces: list[Any]) -> int:
            if self._store is None:
                self._store = open_store(self.url)  # raises while the address is dead
            return self._store.add_traces(traces)

        def add_feedback(self, fb: Any) -> Any:  # pragma: no cover - not used here
            raise NotImplementedError

    swap = SwappableStore()
    ids = []
    with ServerThread(_config(tmp_path, teacher.url), store=swap) as srv:
        for i in range(6):
            raw = _client(srv).chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"pg{i}"}], stream=i % 2 == 0)
            ids.append(raw.headers["x-protege-trace-id"])
        assert srv.app.writer.flush(10) and srv.app.writer.stats.spooled == 6
        swap.url = pg_url
        assert wait_until(lambda: srv.app.writer.stats.replayed == 6)
    store = open_store(pg_url)
    try:
        assert sorted(t.id for t in store.iter_traces()) == sorted(ids)
        assert all(t.response is not None for t in store.iter_traces())
    finally:
        store.close()


def test_feedback_endpoint(gateway: ServerThread, store_url: str) -> None:
    raw = _client(gateway).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    trace_id = raw.headers["x-protege-trace-id"]
    ok = httpx.post(gateway.url + "/v1/feedback", json={"trace_id": trace_id, "score": 1, "comment": "good"})
    assert ok.status_code == 200 and ok.json()["trace_id"] == trace_id
    ok2 = httpx.post(gateway.url + "/v1/feedback", json={"session_id": "run-9", "label": "bad"})
    assert ok2.status_code == 200
    for bad, param in [({"score": 1}, "trace_id"), ({"trace_id": trace_id}, "score"),
                       ({"trace_id": trace_id, "score": "high"}, "score"),
                       ({"trace_id": trace_id, "label": 3}, "label")]:
        r = httpx.post(gateway.url + "/v1/feedback", json=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    r = httpx.post(gateway.url + "/v1/feedback", content=b"{oops")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    store = open_store(store_url)
    try:
        [fb] = store.feedback_for(trace_id=trace_id)
        assert fb.score == 1.0 and fb.comment == "good"
        [fb2] = store.feedback_for(session_id="run-9")
        assert fb2.label == "bad" and fb2.score is None
    finally:
        store.close()


def test_models_health_metrics(gateway: ServerThread) -> None:
    client = _client(gateway)
    assert "fake-teacher" in [m.id for m in client.models.list()]
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fake-error-500", messages=MESSAGES)
    health = httpx.get(gateway.url + "/health").json()
    assert health["status"] == "ok" and health["store"] == "ok"
    assert gateway.app.writer.flush(10)
    text = httpx.get(gateway.url + "/metrics").text
    assert 'protege_gateway_requests_total{endpoint="chat",served_by="teacher",status="200"} 2.0' in text
    assert 'protege_gateway_requests_total{endpoint="chat",served_by="teacher",status="500"} 1.0' in text
    assert 'protege_gateway_request_latency_seconds_count{stream="true"} 1.0' in text
    assert "protege_gateway_ttft_seconds_count 1.0" in text
    assert "protege_capture_queue_depth 0.0" in text
    assert "protege_capture_written_total 3.0" in text
    assert "protege_capture_dropped_total 0.0" in text


def test_gateway_keys_and_teacher_key_env(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from protege.gateway.keys import create_key, revoke_key

    monkeypatch.setenv("TEACHER_KEY", "sk-teacher-secret")
    cfg = _config(tmp_path, teacher.url, store_url, gateway_keys=None, teacher_key_env="TEACHER_KEY")
    record, key = create_key("team-a", cfg.keys_file)
    with ServerThread(cfg) as srv:
        with pytest.raises(openai.AuthenticationError):
            _client(srv, api_key="wrong").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        raw = _client(srv, api_key=key).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES)
        # The gateway key never leaves the gateway; the teacher gets its own key.
        assert teacher.server.last_headers[b"authorization"] == b"Bearer sk-teacher-secret"
        assert _stored(srv, store_url, raw.headers["x-protege-trace-id"]).client_id == "team-a"
        srv.app.keys.RELOAD_EVERY_S = 0.0
        revoke_key(record["id"], cfg.keys_file)
        with pytest.raises(openai.AuthenticationError):
            _client(srv, api_key=key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_redact_hook_runs_before_store(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_scrub.py").write_text(
        "def redact(trace):\n"
        "    for m in trace.request['messages']:\n"
        "        m['content'] = m['content'].replace('Paris', '[CITY]')\n"
        "    trace.meta['redacted'] = True\n"
        "    return trace\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with ServerThread(_config(tmp_path, teacher.url, store_url, redact="my_scrub:redact")) as srv:
        raw = _client(srv).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        assert "Paris" in raw.parse().choices[0].message.content  # the client's answer is untouched
        trace = _stored(srv, store_url, raw.headers["x-protege-trace-id"])
    assert trace.request["messages"][1]["content"] == "weather in [CITY]?" and trace.meta["redacted"]


def test_store_on_both_engines(tmp_path: Path, teacher: FakeTeacherServerThread, db_url: str) -> None:
    with ServerThread(_config(tmp_path, teacher.url, db_url)) as srv:
        raw = _client(srv).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, tools=[WEATHER, CLOCK], stream=True)
        trace_id = raw.headers["x-protege-trace-id"]
        list(raw.parse())
        trace = _stored(srv, db_url, trace_id)
    assert trace.tools_called == ["get_weather", "get_time"] and trace.stream


def test_capture_in_child_process(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str) -> None:
    """`protege serve` builds and stores traces in a child process: same traces,
    same counters, everything flushed at shutdown."""
    cfg = _config(tmp_path, teacher.url, store_url, capture_process=True)
    ids = []
    with ServerThread(cfg) as srv:
        client = _client(srv)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, tools=[WEATHER, CLOCK], stream=True,
            extra_headers={"X-Protege-Task": "tools"})
        list(raw.parse())
        ids.append(raw.headers["x-protege-trace-id"])
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="fake-error-500", messages=MESSAGES)
        ids.append(info.value.response.headers["x-protege-trace-id"])
        writer = srv.app.writer
        assert type(writer).__name__ == "ProcessCaptureWriter"
        assert writer.flush(20)
        assert writer.stats.written == 2 and writer.stats.submitted == 2
        assert "protege_capture_written_total 2.0" in httpx.get(srv.url + "/metrics").text
        tool_trace = _stored(srv, store_url, ids[0])
        assert tool_trace.task_tag == "tools" and tool_trace.tools_called == ["get_weather", "get_time"]
        # Submitted right before shutdown: the close must still deliver them.
        for i in range(20):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"late {i}"}])
            ids.append(raw.headers["x-protege-trace-id"])
    store = open_store(store_url)
    try:
        assert sorted(t.id for t in store.iter_traces()) == sorted(ids)
    finally:
        store.close()


def test_child_process_death_falls_back_in_process(tmp_path: Path, teacher: FakeTeacherServerThread,
                                                   store_url: str) -> None:
    import os
    import signal

    cfg = _config(tmp_path, teacher.url, store_url, capture_process=True)
    with ServerThread(cfg) as srv:
        writer = srv.app.writer
        os.kill(writer._proc.pid, signal.SIGKILL)
        writer._proc.join(5)
        client = _client(srv)
        ids = [client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"after {i}"}]).headers["x-protege-trace-id"]
            for i in range(3)]
        assert wait_until(lambda: writer.flush(5) and writer.stats.written == 3)
        for trace_id in ids:
            assert _stored(srv, store_url, trace_id).status == "ok"


def test_client_disconnect_stops_the_teacher(tmp_path: Path, store_url: str) -> None:
    """A client that hangs up mid-stream: the gateway drops the teacher's
    connection (no paying for tokens nobody reads) and keeps the partial trace."""
    with FakeTeacherServerThread(chunk_delay_s=0.05) as slow, ServerThread(_config(tmp_path, slow.url, store_url)) as srv:
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=10) as r:
            trace_id = r.headers["x-protege-trace-id"]
            for _ in r.iter_raw():
                break  # read one chunk, then hang up
        assert wait_until(lambda: srv.app.writer.stats.submitted == 1, 5)
        trace = _stored(srv, store_url, trace_id)
    assert trace.status == "error" and "client disconnected" in trace.error
    content = trace.response["choices"][0]["message"]["content"] or ""
    assert content and not content.endswith("Paris?")  # only the part produced before the hang-up


def test_teacher_ignoring_stream_flag(tmp_path: Path, store_url: str) -> None:
    """A teacher that answers stream=true with plain JSON: relayed as JSON, captured."""

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "application/json"},
                              json=completion(orjson.loads(request.content)))

    with ServerThread(_config(tmp_path, "http://teacher.invalid/v1", store_url),
                      transport=httpx.MockTransport(handler)) as srv:
        r = httpx.post(srv.url + "/v1/chat/completions?api-version=2024-06-01",
                       json={"model": "m", "messages": MESSAGES, "stream": True})
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        assert str(seen[0].url) == "http://teacher.invalid/v1/chat/completions?api-version=2024-06-01"
        trace = _stored(srv, store_url, r.headers["x-protege-trace-id"])
    assert trace.status == "ok" and trace.stream and trace.response["choices"][0]["message"]["content"]


def test_full_spool_is_loud(tmp_path: Path, teacher: FakeTeacherServerThread, store_url: str,
                            caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyStore(store_url)
    flaky.down = True
    capture = WriterConfig(spool_path=tmp_path / "spool.jsonl", spool_max_bytes=200, flush_interval_s=0.01)
    with ServerThread(_config(tmp_path, teacher.url, store_url, capture=capture), store=flaky) as srv:
        for _ in range(3):
            _client(srv).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert srv.app.writer.flush(10)
        health = httpx.get(srv.url + "/health").json()
        assert health["status"] == "degraded" and health["capture"]["dropped"] == 3
        assert "protege_capture_dropped_total 3.0" in httpx.get(srv.url + "/metrics").text
    assert any(r.levelname == "CRITICAL" and "SPOOL FULL" in r.getMessage() for r in caplog.records)


async def test_concurrent_async_clients_no_crosstalk(gateway: ServerThread, store_url: str) -> None:
    """Forty concurrent calls (AsyncOpenAI, half streamed): each trace holds its
    own request and its own answer."""
    import asyncio

    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-async", max_retries=0, timeout=20)

    async def one(i: int) -> tuple[str, str]:
        messages = [{"role": "user", "content": f"question number {i}"}]
        if i % 2:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=messages, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
        else:
            raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
            text = raw.parse().choices[0].message.content
        return raw.headers["x-protege-trace-id"], text

    results = await asyncio.gather(*(one(i) for i in range(40)))
    await client.close()
    assert gateway.app.writer.flush(10)
    store = open_store(store_url)
    try:
        for i, (trace_id, text) in enumerate(results):
            assert text == f"Sure. You said: question number {i}"
            trace = store.get_trace(trace_id)
            assert trace.request["messages"][0]["content"] == f"question number {i}"
            assert trace.response["choices"][0]["message"]["content"] == text and trace.stream == bool(i % 2)
    finally:
        store.close()
