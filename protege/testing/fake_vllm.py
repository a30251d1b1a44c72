"""A stand-in for a vLLM OpenAI server with ``--enable-lora``: the dynamic
LoRA endpoints, ``/v1/models`` and ``/v1/completions`` answering a scripted
text per adapter, with logprobs. Every request is kept in ``requests`` so a
test can check what protege sent. It answers the way vLLM does where protege
depends on it: a second load of one name is a 400, unloading an unknown name
a 404, a completion for a model it does not serve a 404.

``with FakeVllmThread(base="smol", answers={"t1": "..."}) as vllm: vllm.url``
"""

from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["FakeVllm", "FakeVllmThread"]


def _error(status: int, message: str) -> Any:
    from starlette.responses import JSONResponse

    kind = "NotFoundError" if status == 404 else "BadRequestError"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                        status_code=status)


class FakeVllm:
    """The fake's state and its Starlette app."""

    def __init__(self, *, base: str = "base", answers: dict[str, str] | None = None,
                 token_prob: float = 0.9) -> None:
        self.base = base
        self.answers = dict(answers or {})
        self.token_prob = token_prob
        self.loaded: dict[str, str] = {}  # lora_name -> lora_path
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.app = self._build()

    def _build(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.routing import Route

        async def body_of(request: Request) -> dict[str, Any]:
            body = await request.json() if await request.body() else {}
            self.requests.append((request.url.path, body))
            return body

        async def health(request: Request) -> Any:
            return PlainTextResponse("")

        async def models(request: Request) -> Any:
            ids = [self.base, *sorted(self.loaded)]
            return JSONResponse({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

        async def load(request: Request) -> Any:
            body = await body_of(request)
            name, path = body.get("lora_name"), body.get("lora_path")
            if not name or not path:
                return _error(400, "lora_name and lora_path are required")
            if name in self.loaded:
                return _error(400, f"The lora adapter '{name}' has already been loaded.")
            if not Path(path).exists():
                return _error(404, f"No adapter found at {path}")
            self.loaded[name] = path
            return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

        async def unload(request: Request) -> Any:
            body = await body_of(request)
            name = body.get("lora_name")
            if name not in self.loaded:
                return _error(404, f"The lora adapter '{name}' cannot be found.")
            del self.loaded[name]
            return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

        async def completions(request: Request) -> Any:
            body = await body_of(request)
            model = body.get("model")
            if model != self.base and model not in self.loaded:
                return _error(404, f"The model `{model}` does not exist.")
            text = self.answers.get(model, "")
            pieces = [text[i:i + 4] for i in range(0, len(text), 4)] or [""]
            lp = math.log(self.token_prob)
            n_top = int(body.get("logprobs") or 0)
            logprobs = None
            if n_top:
                runner_up = math.log((1 - self.token_prob) / 2)
                logprobs = {
                    "tokens": pieces, "token_logprobs": [lp] * len(pieces),
                    "top_logprobs": [{p: lp, "~alt": runner_up} for p in pieces],
                    "text_offset": [4 * i for i in range(len(pieces))],
                }
            return JSONResponse({
                "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": logprobs}],
                "usage": {"prompt_tokens": len(str(body.get("prompt", ""))) // 4,
                          "completion_tokens": len(pieces), "total_tokens": 0},
            })

        return Starlette(routes=[
            Route("/health", health), Route("/v1/models", models),
            Route("/v1/load_lora_adapter", load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ])

    def sent(self, path: str) -> list[dict[str, Any]]:
        """The bodies protege sent to ``path``, oldest first."""
        return [b for p, b in self.requests if p == path]


class FakeVllmThread:
    """The fake on a free loopback port, served by uvicorn in a daemon thread."""

    def __init__(self, **kwargs: Any) -> None:
        import uvicorn

        self.fake = FakeVllm(**kwargs)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.fake.app, log_level="warning", lifespan="off"))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeVllmThread:
        self._thread = threading.Thread(target=lambda: self.server.run(sockets=[self._sock]),
                                        name="fake-vllm", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake vLLM server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop answering (a vLLM that went down): the port refuses connections afterwards."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> FakeVllmThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
