"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``,
so that SDK clients raise their usual exception types."""

from __future__ import annotations

from typing import Any

import orjson

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_payload(message: str, type_: str = "invalid_request_error", *, param: str | None = None,
                  code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body(message: str, type_: str = "invalid_request_error", *, param: str | None = None,
               code: str | None = None) -> bytes:
    return orjson.dumps(error_payload(message, type_, param=param, code=code))


def sse_error_event(message: str, type_: str = "server_error", *, code: str | None = None) -> bytes:
    """The event that ends a stream that failed midway (never ``[DONE]``)."""
    return b"data: " + error_body(message, type_, code=code) + b"\n\n"
