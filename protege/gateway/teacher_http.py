"""The pooled async HTTP client the gateway forwards a client's bytes to the
teacher with (below the ``protege.teacher`` seam: a drop-in proxy passes on
what it does not parse).

One small interface, two implementations: aiohttp (faster per request, used
in production when installed) and httpx (whose transport tests replace with an
in-process fake). Failures are mapped onto three exceptions so the gateway can
answer 504 (timeout) or 502 (connection or protocol failure).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from typing import Any

# Not forwarded in either direction: per-connection headers and the ones the
# server side sets itself. Content-Encoding is kept: the gateway asks the teacher
# for identity, but a teacher that compresses anyway must not corrupt the answer.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "content-length", "host", "date", "server",
})


class TeacherHttpError(Exception):
    """The teacher could not be reached or broke the connection (-> 502)."""

    # The error codes keep the names clients already match on.
    status = 502
    code = "upstream_unavailable"


class TeacherTimeout(TeacherHttpError):
    status = 504
    code = "upstream_timeout"


class TeacherConnectError(TeacherHttpError):
    code = "upstream_connect_error"


class TeacherResponse(abc.ABC):
    """Status, forwardable headers and a body read once (whole or chunked)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content_type: bytes
    content_encoding: bytes | None = None

    @abc.abstractmethod
    async def read(self) -> bytes:
        """The whole body."""

    @abc.abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection."""


def _forwardable(pairs: Any) -> tuple[list[tuple[bytes, bytes]], bytes, bytes | None]:
    out = []
    ctype = b"application/json"
    encoding = None
    for name, value in pairs:
        n = name.lower() if isinstance(name, bytes) else name.lower().encode("latin-1")
        if n.decode("latin-1") in HOP_BY_HOP:
            continue
        v = value if isinstance(value, bytes) else value.encode("latin-1")
        if n == b"content-type":
            ctype = v
        elif n == b"content-encoding":
            encoding = v.strip().lower()
        out.append((n, v))
    return out, ctype, encoding


# -- httpx ------------------------------------------------------------------
class _HttpxResponse(TeacherResponse):
    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers, self.content_type, self.content_encoding = _forwardable(resp.headers.raw)

    def _already_read(self) -> bytes | None:
        # Responses built in memory (httpx.MockTransport with content=) arrive read.
        import httpx

        try:
            content = self._resp.content
        except httpx.ResponseNotRead:
            return None
        # httpx decoded it already: it no longer has a content encoding.
        self.content_encoding = None
        self.headers = [(k, v) for k, v in self.headers if k != b"content-encoding"]
        return content

    async def read(self) -> bytes:
        import httpx

        done = self._already_read()
        if done is not None:
            return done
        try:
            return b"".join([c async for c in self._resp.aiter_raw()])
        except httpx.TimeoutException as exc:
            raise TeacherTimeout(f"the teacher timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise TeacherHttpError(f"the connection to the teacher broke: {exc!r}") from exc
        finally:
            await self._resp.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        import httpx

        done = self._already_read()
        if done is not None:
            yield done
            return
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise TeacherTimeout(f"the teacher timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise TeacherHttpError(f"the connection to the teacher broke: {exc!r}") from exc

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxTeacherClient:
    name = "httpx"

    def __init__(self, *, timeout_s: float, connect_timeout_s: float, max_connections: int,
                 transport: Any = None) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
        )

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> TeacherResponse:
        httpx = self._httpx
        try:
            req = self.client.build_request(method, url, headers=headers, content=body)
            resp = await self.client.send(req, stream=True)
        except httpx.TimeoutException as exc:
            raise TeacherTimeout(f"the teacher timed out: {exc!r}") from exc
        except httpx.ConnectError as exc:
            raise TeacherConnectError(f"cannot connect to the teacher: {exc}") from exc
        except httpx.HTTPError as exc:
            raise TeacherHttpError(f"the request to the teacher failed: {exc!r}") from exc
        return _HttpxResponse(resp)

    async def aclose(self) -> None:
        await self.client.aclose()


# -- aiohttp ----------------------------------------------------------------
class _AiohttpResponse(TeacherResponse):
    def __init__(self, resp: Any, aiohttp: Any) -> None:
        self._resp = resp
        self._aiohttp = aiohttp
        self.status = resp.status
        self.headers, self.content_type, self.content_encoding = _forwardable(resp.raw_headers)

    def _map(self, exc: BaseException) -> TeacherHttpError:
        if isinstance(exc, asyncio.TimeoutError | self._aiohttp.ServerTimeoutError):
            return TeacherTimeout(f"the teacher timed out: {exc!r}")
        return TeacherHttpError(f"the connection to the teacher broke: {exc!r}")

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, self._aiohttp.ClientError) as exc:
            raise self._map(exc) from exc
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, self._aiohttp.ClientError) as exc:
            raise self._map(exc) from exc
        # A chunked body cut off before its terminator reads as a clean end in
        # some aiohttp versions; the gateway's [DONE] check catches that case.

    async def close(self) -> None:
        self._resp.release()


class AiohttpTeacherClient:
    name = "aiohttp"

    def __init__(self, *, timeout_s: float, connect_timeout_s: float, max_connections: int) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=timeout_s)
        self._max = max_connections
        self.session: Any = None
        self._urls: dict[str, Any] = {}

    def _session(self) -> Any:
        # Created lazily: aiohttp binds the session to the running loop.
        if self.session is None:
            aiohttp = self._aiohttp
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max, ttl_dns_cache=300, force_close=False),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self.session

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> TeacherResponse:
        aiohttp = self._aiohttp
        parsed = self._urls.get(url)
        if parsed is None:
            import yarl

            # The same few URLs every time: parse them once.
            parsed = yarl.URL(url)
            if len(self._urls) < 1024:
                self._urls[url] = parsed
        try:
            resp = await self._session().request(method, parsed, headers=headers, data=body)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TeacherTimeout(f"the teacher timed out: {exc!r}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise TeacherConnectError(f"cannot connect to the teacher: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise TeacherHttpError(f"the request to the teacher failed: {exc!r}") from exc
        return _AiohttpResponse(resp, aiohttp)

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


def make_teacher_client(kind: str, *, timeout_s: float, connect_timeout_s: float, max_connections: int,
                  transport: Any = None) -> HttpxTeacherClient | AiohttpTeacherClient:
    """``transport`` (an httpx transport) forces httpx: that is how tests plug
    in an in-process fake teacher."""
    if transport is None and kind in ("auto", "aiohttp"):
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            if kind == "aiohttp":
                raise
        else:
            return AiohttpTeacherClient(timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
                                   max_connections=max_connections)
    return HttpxTeacherClient(timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
                         max_connections=max_connections, transport=transport)
