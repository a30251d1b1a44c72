"""Running the gateway: ``serve`` (blocking, for ``protege serve``) and
``ServerThread`` (a loopback server in a background thread, for tests, the
demo and the benchmark)."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import uvicorn

from protege.gateway.app import Gateway, create_app
from protege.gateway.config import GatewayConfig

if TYPE_CHECKING:
    from protege.gateway.storage import LazyStore
    from protege.store.db import TraceStore


def _uvicorn_config(app: Any, host: str, port: int, log_level: str) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:  # pragma: no cover
        http = "h11"
    # No access log: a log line per request would cost more than the gateway itself.
    return uvicorn.Config(app, host=host, port=port, loop=loop, http=http, lifespan="on",
                          access_log=False, log_level=log_level, timeout_graceful_shutdown=10,
                          backlog=2048, timeout_keep_alive=30, proxy_headers=False, server_header=False)


def serve(config: GatewayConfig, *, store: TraceStore | LazyStore | None = None, app: Gateway | None = None,
          log_level: str = "warning") -> None:
    """Run until interrupted; shutdown flushes every captured trace."""
    app = app or create_app(config, store=store)
    uvicorn.Server(_uvicorn_config(app, config.host, config.port, log_level)).run()


class ServerThread:
    """The gateway on a free loopback port in a daemon thread:
    ``with ServerThread(config) as srv: OpenAI(base_url=srv.url + "/v1")``."""

    def __init__(self, config: GatewayConfig | None = None, *, app: Gateway | None = None, store: TraceStore | LazyStore | None = None,
                 transport: Any = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app or create_app(config, store=store, transport=transport)
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(_uvicorn_config(self.app, host, self.port, "warning"))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        def run() -> None:
            self.server.run(sockets=[self._sock])

        self._thread = threading.Thread(target=run, name="protege-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
