"""A fast OpenAI-compatible fake teacher on loopback, for the demo, the tests
and the gateway benchmark.

It is a raw asyncio HTTP/1.1 server (httptools parser, keep-alive, chunked
SSE) so that it costs little CPU next to what it serves. Its answers are
deterministic and follow the request: tool calls when tools are offered
(two in parallel when ``parallel_tool_calls`` allows and two tools exist),
JSON when ``response_format`` asks for it, ``n`` choices, a usage chunk when
``stream_options.include_usage`` is set.

Some model names trigger failures, so tests can reach every error path:
``fake-error-<status>`` answers that status with an OpenAI error body,
``fake-slow`` waits ``slow_s`` before answering, ``fake-break`` sends part of
its answer and then drops the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import zlib
from typing import Any

import httptools
import orjson

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _example_value(schema: dict[str, Any], name: str, seed: str) -> Any:
    kind = schema.get("type")
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if kind == "integer":
        return len(seed) % 97
    if kind == "number":
        return (len(seed) % 97) / 2
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example_value(schema.get("items") or {"type": "string"}, name, seed)]
    if kind == "object":
        return {k: _example_value(v, k, seed) for k, v in (schema.get("properties") or {}).items()}
    # A proper noun from the prompt makes a plausible argument ("Lisbon").
    words = re.findall(r"\b[A-Z][a-z]+\b", seed)
    return words[-1] if len(words) > 1 else words[0] if words else f"{name}-value"


def _last_user_text(request: dict[str, Any]) -> str:
    for msg in reversed(request.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _tool_calls(request: dict[str, Any], choice_index: int) -> list[dict[str, Any]] | None:
    tools = [t for t in request.get("tools") or [] if isinstance(t, dict) and t.get("function")]
    choice = request.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        wanted = choice["function"]["name"]
        tools = [t for t in tools if t["function"].get("name") == wanted] or tools[:1]
    parallel = request.get("parallel_tool_calls", True) is not False
    picked = tools[:2] if parallel else tools[:1]
    seed = _last_user_text(request) or "call"
    calls = []
    for i, tool in enumerate(picked):
        fn = tool["function"]
        params = fn.get("parameters") or {}
        props = params.get("properties") or {}
        required = params.get("required") or list(props)
        args = {k: _example_value(props.get(k) or {}, k, seed) for k in required}
        calls.append({
            "id": f"call_{choice_index}_{i}_{zlib.crc32((seed + str(fn.get('name'))).encode()) % 10**8:08d}",
            "type": "function",
            "function": {"name": fn.get("name"), "arguments": orjson.dumps(args).decode()},
        })
    return calls


def completion(request: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """The canned ``chat.completion`` the fake teacher answers ``request`` with."""
    text = _last_user_text(request)
    rf = request.get("response_format") or {}
    n = request.get("n") or 1
    choices = []
    completion_tokens = 0
    for i in range(n):
        calls = _tool_calls(request, i)
        if calls:
            msg: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": calls}
            finish = "tool_calls"
            completion_tokens += sum(len(c["function"]["arguments"]) // 4 + 3 for c in calls)
        else:
            if rf.get("type") in ("json_object", "json_schema"):
                content = orjson.dumps({"answer": text[:80], "choice": i}).decode()
            else:
                content = f"Sure. You said: {text[:160]}" + (f" (choice {i})" if n > 1 else "")
            msg = {"role": "assistant", "content": content, "refusal": None}
            finish = "stop"
            completion_tokens += len(content) // 4 + 1
        choices.append({"index": i, "message": msg, "logprobs": None, "finish_reason": finish})
    prompt_tokens = sum(len(str(m.get("content") or "")) for m in request.get("messages") or []) // 4 + 5
    return {
        "id": f"chatcmpl-fake{zlib.crc32(text.encode()):010d}",
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": request.get("model") or "fake-teacher",
        "system_fingerprint": "fp_fake",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _split(text: str, parts: int) -> list[str]:
    if not text:
        return [""]
    step = max(1, -(-len(text) // parts))
    return [text[i : i + step] for i in range(0, len(text), step)]


def stream_chunks(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The same answer as ``completion`` cut into ``chat.completion.chunk``s:
    tool-call arguments in fragments, parallel calls interleaved by index."""
    full = completion(request)
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"],
            "model": full["model"], "system_fingerprint": full["system_fingerprint"]}
    usage_wanted = bool((request.get("stream_options") or {}).get("include_usage"))
    chunks: list[dict[str, Any]] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        c = {**base, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if usage_wanted:
            c["usage"] = None
        chunks.append(c)

    for ch in full["choices"]:
        i, msg = ch["index"], ch["message"]
        chunk(i, {"role": "assistant", "content": "" if msg.get("tool_calls") is None else None})
        if msg.get("tool_calls"):
            calls = msg["tool_calls"]
            pieces = [_split(tc["function"]["arguments"], 3) for tc in calls]
            for k, tc in enumerate(calls):
                chunk(i, {"tool_calls": [{"index": k, "id": tc["id"], "type": "function",
                                          "function": {"name": tc["function"]["name"], "arguments": ""}}]})
            for step in range(max(len(p) for p in pieces)):
                for k, p in enumerate(pieces):  # interleave the parallel calls
                    if step < len(p):
                        chunk(i, {"tool_calls": [{"index": k, "function": {"arguments": p[step]}}]})
        else:
            for piece in _split(msg["content"], 8):
                chunk(i, {"content": piece})
        chunk(i, {}, ch["finish_reason"])
    if usage_wanted:
        chunks.append({**base, "choices": [], "usage": full["usage"]})
    return chunks


def _error_body(status: int, message: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": str(status)}})


class _Conn(asyncio.Protocol):
    def __init__(self, server: FakeTeacherServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport:
                self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        url, headers, body = self.url, self.headers, b"".join(self.body)
        self._reset()
        self.server.requests += 1
        self.server.last_headers = headers
        self.server.last_body = body
        asyncio.get_running_loop().create_task(self.server._handle(self, method, url, headers, body))

    def write_response(self, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nx-request-id: fake\r\n\r\n" % (
            status, _REASONS.get(status, "Status").encode(), content_type, len(body))
        self.transport.write(head + body)


class FakeTeacherServer:
    """``await start()``, then point clients at ``.url`` (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, slow_s: float = 5.0,
                 chunk_delay_s: float = 0.0) -> None:
        self.host, self.port = host, port
        self.slow_s = slow_s
        self.chunk_delay_s = chunk_delay_s
        self.requests = 0
        self.last_headers: dict[bytes, bytes] = {}
        self.last_body = b""
        self._server: asyncio.base_events.Server | None = None
        self._cache: dict[bytes, tuple[bytes, bytes]] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> FakeTeacherServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def _render(self, body: bytes) -> tuple[bytes, bytes]:
        # The same request body always gets the same answer: cache the rendering
        # so that a benchmark measures the gateway, not this server.
        hit = self._cache.get(body)
        if hit is not None:
            return hit
        request = orjson.loads(body)
        plain = orjson.dumps(completion(request, created=1_700_000_000))
        sse = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in stream_chunks(request)) + b"data: [DONE]\n\n"
        if len(self._cache) < 10_000:
            self._cache[body] = (plain, sse)
        return plain, sse

    async def _handle(self, conn: _Conn, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        path = url.split(b"?", 1)[0]
        if method == b"GET" and path.endswith(b"/models"):
            data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
                    for m in ("fake-teacher", "fake-error-500", "fake-slow", "fake-break")]
            conn.write_response(200, orjson.dumps({"object": "list", "data": data}))
            return
        if method != b"POST" or not path.endswith(b"/chat/completions"):
            conn.write_response(404, _error_body(404, f"no route {path.decode()}"))
            return
        try:
            request = orjson.loads(body)
            model = str(request.get("model") or "")
        except (orjson.JSONDecodeError, AttributeError):
            conn.write_response(400, _error_body(400, "fake teacher: body is not a JSON object"))
            return
        if model.startswith("fake-error-"):
            status = int(model.rsplit("-", 1)[1])
            conn.write_response(status, _error_body(status, f"fake teacher failure {status}"))
            return
        if model == "fake-slow":
            await asyncio.sleep(self.slow_s)
        plain, sse = self._render(body)
        stream = bool(request.get("stream"))
        transport = conn.transport
        if transport is None or transport.is_closing():
            return
        if not stream:
            if model == "fake-break":
                transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                                % len(plain) + plain[: len(plain) // 2])
                transport.close()
                return
            conn.write_response(200, plain)
            return
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                b"transfer-encoding: chunked\r\nx-request-id: fake\r\n\r\n")
        events = [e + b"\n\n" for e in sse.split(b"\n\n") if e]
        if model == "fake-break":
            part = events[: max(1, len(events) // 2)]
            transport.write(head + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in part))
            await asyncio.sleep(0.01)
            transport.abort()
            return
        if self.chunk_delay_s <= 0:
            transport.write(head + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n")
            return
        transport.write(head)
        for e in events:
            await asyncio.sleep(self.chunk_delay_s)
            if transport.is_closing():
                return
            transport.write(b"%x\r\n%s\r\n" % (len(e), e))
        transport.write(b"0\r\n\r\n")


class FakeTeacherServerThread:
    """The fake teacher server on its own event loop in a daemon thread, for sync code
    (tests, the demo): ``with FakeTeacherServerThread() as up: ... up.url``."""

    def __init__(self, **kwargs: Any) -> None:
        self.server = FakeTeacherServer(**kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> FakeTeacherServerThread:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.server.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-teacher-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeTeacherServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - used by bench/fake_teacher_server.py
    import argparse

    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible teacher on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()

    async def serve() -> None:
        up = await FakeTeacherServer(args.host, args.port, chunk_delay_s=args.chunk_delay_ms / 1000).start()
        print(f"READY {up.url}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
