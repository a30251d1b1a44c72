"""The live report at ``/ui``: behind the gateway's keys, built on first visit."""

from __future__ import annotations

from typing import Any

from protege.gateway.errors import JSON_HEADERS, error_body
from protege.gateway.storage import LazyStore


class LazyUI:
    """The live report at /ui, built on first visit (it imports the report package)."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self._app: Any = None

    def _authorized(self, scope: dict[str, Any]) -> bool:
        import base64

        for k, v in scope["headers"]:
            if k == b"x-protege-key" and self.gateway.keys.check(v.decode("latin-1")):
                return True
            if k == b"authorization":
                scheme, _, value = v.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and self.gateway.keys.check(value.strip()):
                    return True
                if scheme.lower() == "basic":
                    try:
                        password = base64.b64decode(value.strip()).decode().partition(":")[2]
                    except (ValueError, UnicodeDecodeError):
                        continue
                    if self.gateway.keys.check(password):
                        return True
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.gateway.keys.enabled and not self._authorized(scope):
            # Trace payloads are behind the gateway's keys; Basic auth lets a browser ask for one.
            body = error_body("A valid gateway API key is required (Basic auth password, X-Protege-Key "
                              "or Authorization: Bearer).", "invalid_request_error", code="invalid_api_key")
            headers = [*JSON_HEADERS, (b"www-authenticate", b'Basic realm="protege"'),
                       (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        if self._app is None:
            from protege.report.ui import create_ui_app

            store = self.gateway.store
            self._app = create_ui_app(store._get() if isinstance(store, LazyStore) else store)
        await self._app(scope, receive, send)
