"""httpx transports over hushcall, so that httpx-based clients (the official
``openai`` package first) send their requests end to end encrypted:

.. code-block:: python

    import httpx, openai, hushcall.httpx

    client = openai.OpenAI(
        base_url="https://gateway.example/v1", api_key=key, max_retries=0,
        http_client=httpx.Client(transport=hushcall.httpx.Transport("https://gateway.example")))

``Transport`` (sync) and ``AsyncTransport`` (asyncio) each own a hushcall
``Client`` / ``AsyncClient`` made from the same options, so sealing, both v2
suites, key discovery and the 422 rotation recovery are the core's. A request
goes out only to the transport's own base URL: any other origin, or a path
outside it, is refused before anything is sent. The request's JSON body is
sealed; ``"stream": true`` gets a ``text/event-stream`` answer built from the
stream's authenticated chunks (``data: <chunk>``, then ``data: [DONE]``).

Errors: an HTTP status from the server becomes an ``httpx.Response`` with that
status and its JSON error body (so ``openai`` raises its own
``APIStatusError``); a timeout or connection failure becomes httpx's own
exception (``ReadTimeout``, ``ConnectError``, ``ReadError`` mid-stream), the
hushcall one as its cause; every other hushcall failure (``SecurityError``,
``IncompleteStreamError``, ...) propagates as it is.

The answers become ordinary Python objects here (httpx bytes, then whatever
the caller parses them into): this path is for compatibility. The hushcall
clients are the path that keeps plaintext in locked memory.
"""

import json
from typing import Any, AsyncIterator, Dict, Iterator, Optional, Tuple, Union

import httpx

from .client import AsyncClient, Client
from .errors import APIConnectionError, APIError, APITimeoutError, InvalidArgumentError, SecurityError

__all__ = ["Transport", "AsyncTransport"]

_API_PREFIX = "/v1/"
_DONE_EVENT = b"data: [DONE]\n\n"


class _Target:
    """The transport's base URL, and what a request must match to go out."""

    def __init__(self, base_url: str) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidArgumentError("base_url must be an http(s) URL")
        if url.query or url.fragment:
            raise InvalidArgumentError("base_url must have no query or fragment")
        self.url = url
        self.prefix = url.path.rstrip("/")

    def path_of(self, url: httpx.URL) -> str:
        """The hushcall call path of `url` ("/v1/..."), or SecurityError when
        `url` is not under the base URL (another scheme, host, port or path)."""
        same_origin = (url.scheme, url.host, url.port) == (self.url.scheme, self.url.host, self.url.port)
        if not same_origin or not url.path.startswith(self.prefix + _API_PREFIX):
            raise SecurityError("hushcall.httpx: refused a request outside the transport's base URL")
        if url.query:
            raise InvalidArgumentError("hushcall.httpx: query strings are not supported")
        return url.path[len(self.prefix):]


def _bearer_token(request: httpx.Request) -> Optional[str]:
    """The API key from `Authorization: Bearer <key>`, else None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _call_arguments(target: _Target, request: httpx.Request, body: bytes) -> Tuple[Dict[str, Any], bool]:
    """request()'s keyword arguments for `request` (its body read), and
    whether the answer is to be streamed."""
    arguments: Dict[str, Any] = {"method": request.method, "path": target.path_of(request.url)}
    document = None
    if body:
        try:
            document = json.loads(body)
        except ValueError:
            raise InvalidArgumentError("hushcall.httpx: the request body must be JSON") from None
        arguments["json"] = document
    api_key = _bearer_token(request)
    if api_key is not None:
        arguments["api_key"] = api_key
    stream = isinstance(document, dict) and document.get("stream") is True
    arguments["stream"] = stream
    return arguments, stream


def _json_bytes(response: Any) -> bytes:
    """A hushcall Response as compact JSON bytes; its locked document is wiped."""
    try:
        return json.dumps(response.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()
    finally:
        response.wipe()


def _event(chunk: Any) -> bytes:
    return b"data: " + _json_bytes(chunk) + b"\n\n"


def _error_response(error: APIError, request: httpx.Request) -> httpx.Response:
    """The server's HTTP error as an httpx.Response: its status and JSON body."""
    details = error.error_details
    if not isinstance(details, dict):
        details = {"error": {"message": str(error), "type": error.kind or "api_error"}}
    return httpx.Response(error.status_code, json=details, request=request)


def _as_httpx_error(error: APIConnectionError, request: httpx.Request, mid_stream: bool) -> httpx.HTTPError:
    """httpx's own exception for a hushcall timeout or connection failure."""
    if isinstance(error, APITimeoutError):
        return httpx.ReadTimeout(str(error), request=request)
    if mid_stream:
        return httpx.ReadError(str(error), request=request)
    return httpx.ConnectError(str(error), request=request)


def _answered(result: Any, request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "application/json"},
                          content=_json_bytes(result), request=request)


def _streamed(byte_stream: Union[httpx.SyncByteStream, httpx.AsyncByteStream],
              request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"},
                          stream=byte_stream, request=request)


# ---- synchronous ---------------------------------------------------------------------


class _EventStream(httpx.SyncByteStream):
    """A hushcall Stream as server-sent event bytes; the first chunk already taken."""

    def __init__(self, stream: Any, chunks: Iterator[Any], first: Any, request: httpx.Request) -> None:
        self._stream, self._chunks, self._first, self._request = stream, chunks, first, request

    def __iter__(self) -> Iterator[bytes]:
        first, self._first = self._first, None
        if first is not None:
            yield _event(first)
        try:
            for chunk in self._chunks:
                yield _event(chunk)
        except APIConnectionError as e:
            raise _as_httpx_error(e, self._request, mid_stream=True) from e
        yield _DONE_EVENT

    def close(self) -> None:
        if self._first is not None:
            self._first.wipe()
            self._first = None
        self._stream.close()


class Transport(httpx.BaseTransport):
    """An httpx transport sending every request through a hushcall ``Client``
    to `base_url` (the server's root, where its keys are published) and only
    there. `options` are ``hushcall.Client``'s (allow_http, protocol,
    require_pq, api_key, timeouts, ...); the ``Authorization: Bearer`` key of
    a request, when it has one, is its call's api_key."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._target = _Target(base_url)
        self._client = Client(base_url, **options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        arguments, stream = _call_arguments(self._target, request, request.read())
        try:
            result = self._client.request(**arguments)
            if not stream:
                return _answered(result, request)
            return self._first_chunk_then_stream(result, request)
        except APIError as e:
            if e.status_code is None:
                raise
            return _error_response(e, request)
        except APIConnectionError as e:
            raise _as_httpx_error(e, request, mid_stream=False) from e

    def _first_chunk_then_stream(self, stream: Any, request: httpx.Request) -> httpx.Response:
        """Wait for the first chunk, so that an HTTP error answers as a status."""
        chunks = iter(stream)
        try:
            first = next(chunks, None)
        except BaseException:
            stream.close()
            raise
        return _streamed(_EventStream(stream, chunks, first, request), request)

    def close(self) -> None:
        self._client.close()


# ---- asyncio -------------------------------------------------------------------------


class _AsyncEventStream(httpx.AsyncByteStream):
    """A hushcall AsyncStream as server-sent event bytes; the first chunk already taken."""

    def __init__(self, stream: Any, first: Any, request: httpx.Request) -> None:
        self._stream, self._first, self._request = stream, first, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, None
        if first is not None:
            yield _event(first)
        try:
            async for chunk in self._stream:
                yield _event(chunk)
        except APIConnectionError as e:
            raise _as_httpx_error(e, self._request, mid_stream=True) from e
        yield _DONE_EVENT

    async def aclose(self) -> None:
        if self._first is not None:
            self._first.wipe()
            self._first = None
        await self._stream.aclose()


class AsyncTransport(httpx.AsyncBaseTransport):
    """``Transport`` for ``httpx.AsyncClient``, over a hushcall ``AsyncClient``."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._target = _Target(base_url)
        self._client = AsyncClient(base_url, **options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        arguments, stream = _call_arguments(self._target, request, await request.aread())
        try:
            result = await self._client.request(**arguments)
            if not stream:
                return _answered(result, request)
            return await self._first_chunk_then_stream(result, request)
        except APIError as e:
            if e.status_code is None:
                raise
            return _error_response(e, request)
        except APIConnectionError as e:
            raise _as_httpx_error(e, request, mid_stream=False) from e

    async def _first_chunk_then_stream(self, stream: Any, request: httpx.Request) -> httpx.Response:
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        return _streamed(_AsyncEventStream(stream, first, request), request)

    async def aclose(self) -> None:
        await self._client.aclose()
