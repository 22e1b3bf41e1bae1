"""What the gateway lets its clients hold (docs/gateway.md, "Limits"): requests
in flight from the moment their head is read, request body bytes across all
requests, a deadline for each request head, and open connections per address.
aiohttp has neither a head deadline nor a per-address cap, so those live in
its connection protocol, subclassed here."""

import asyncio
import json
import logging
import math
import time
from typing import Dict, Optional

from aiohttp import HttpVersion11, web
from aiohttp.web_protocol import RequestHandler

__all__ = ["Limits", "LimitedAppRunner", "expect_later", "continue_upload"]

log = logging.getLogger("hushcall.gateway")

DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS_PER_IP = 64
# A flood of refused connections writes at most one line a second about them.
REFUSAL_LOG_INTERVAL = 1.0

# What a request holds, kept in the request itself so that release finds it
# (typed keys where aiohttp has them, 3.13 on; plain names before).
_key = getattr(web, "RequestKey", lambda name, kind: name)
HOLDS_SLOT = _key("hushcall.limits.slot", bool)
HOLDS_BYTES = _key("hushcall.limits.bytes", int)


class Limits:
    """The counters every connection and request of one gateway share."""

    def __init__(self, *, max_in_flight: int, max_buffered_bytes: int, header_timeout: float,
                 max_connections_per_ip: int, log_format: str = "text"):
        self.max_in_flight = max_in_flight
        self.max_buffered_bytes = max_buffered_bytes
        self.header_timeout = header_timeout
        self.max_connections_per_ip = max_connections_per_ip
        self.log_format = log_format
        self.in_flight = 0
        self.buffered_bytes = 0
        self.connections: Dict[str, int] = {}
        self.refused_unlogged = 0
        self.refusal_logged_at = -math.inf

    # ---- requests --------------------------------------------------------

    def admit(self, request: web.BaseRequest) -> bool:
        """Take an in-flight slot for the request, held until its answer is sent."""
        if self.in_flight >= self.max_in_flight:
            return False
        self.in_flight += 1
        request[HOLDS_SLOT] = True
        return True

    def reserve(self, request: web.BaseRequest, size: int) -> bool:
        """Count `size` more body bytes against the budget, or refuse them."""
        if self.buffered_bytes + size > self.max_buffered_bytes:
            return False
        self.buffered_bytes += size
        request[HOLDS_BYTES] = request.get(HOLDS_BYTES, 0) + size
        return True

    def release(self, request: web.BaseRequest) -> None:
        """Give back whatever the request holds; harmless when it holds nothing."""
        self.buffered_bytes -= request.pop(HOLDS_BYTES, 0)
        if request.pop(HOLDS_SLOT, False):
            self.in_flight -= 1

    @web.middleware
    async def hold_until_sent(self, request: web.Request, handler) -> web.StreamResponse:
        """Sends an admitted request's answer itself, so that its slot and its
        bytes are held until then, and releases them on every path."""
        try:
            response = await handler(request)
            if request.get(HOLDS_SLOT):
                await send(request, response)
            return response
        finally:
            self.release(request)

    async def cut_off(self, request: web.Request, deadline: str,
                      response: web.Response) -> web.Response:
        """Answer a request that missed a deadline, then close its connection
        without waiting for the rest of its body."""
        self.log_event(deadline + "_timeout", request.remote)
        await send(request, response)
        if request.protocol is not None:
            request.protocol.force_close()
        return response

    # ---- connections -----------------------------------------------------

    def open_connection(self, address: str) -> bool:
        """Count a new connection from `address`, or refuse it past the cap."""
        count = self.connections.get(address, 0)
        if count >= self.max_connections_per_ip:
            self.log_refusal(address)
            return False
        self.connections[address] = count + 1
        return True

    def close_connection(self, address: str) -> None:
        count = self.connections[address] - 1
        if count:
            self.connections[address] = count
        else:
            del self.connections[address]

    def log_refusal(self, address: str) -> None:
        now = time.monotonic()
        if now - self.refusal_logged_at < REFUSAL_LOG_INTERVAL:
            self.refused_unlogged += 1
            return
        self.log_event("connection_refused", address,
                       open=self.connections.get(address, 0),
                       refused_unlogged=self.refused_unlogged)
        self.refusal_logged_at, self.refused_unlogged = now, 0

    def log_event(self, event: str, client: Optional[str], **fields) -> None:
        """One line, in the access log's format: what happened, and to whom."""
        record = {"ts": round(time.time(), 3), "event": event, "client": client or "-"}
        record.update(fields)
        if self.log_format == "json":
            log.info("%s", json.dumps(record, separators=(",", ":")))
        else:
            log.info("%s", " ".join("%s=%s" % (k, v) for k, v in record.items() if k != "ts"))


async def send(request: web.Request, response: web.StreamResponse) -> None:
    """Write the whole answer now; aiohttp's own finish then finds it sent."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; aiohttp sees it too and drops the connection


def waits_to_continue(request: web.BaseRequest) -> bool:
    return (request.version == HttpVersion11
            and request.headers.get("Expect", "").lower() == "100-continue")


async def expect_later(request: web.Request) -> None:
    """The Expect handler of a route that admits a body before it is sent:
    it refuses what it does not know, as aiohttp's does, but leaves
    "100 Continue" to continue_upload, so a refused client never sends it."""
    if request.version == HttpVersion11 and not waits_to_continue(request):
        raise web.HTTPExpectationFailed(text="Unknown Expect header")


async def continue_upload(request: web.Request) -> None:
    """Tell a client waiting on Expect: 100-continue that its body is admitted."""
    if waits_to_continue(request):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not started


def peer_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return peer[0] if isinstance(peer, (tuple, list)) and peer else "-"


class LimitedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a deadline on each request head and
    the per-address cap. The head deadline runs from the connection, or from
    the first byte after the previous request's body, to the end of the head;
    an idle kept-alive connection stays keepalive_timeout's business."""

    def __init__(self, manager: web.Server, limits: Limits, **kwargs):
        super().__init__(manager, **kwargs)
        self.limits = limits
        self.address: Optional[str] = None  # set while the connection is counted
        self.head_deadline: Optional[asyncio.TimerHandle] = None
        self.latest_body = None  # the body stream of the latest request head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        address = peer_address(transport)
        if not self.limits.open_connection(address):
            self.force_close()
            return
        self.address = address
        self.start_head_deadline()

    def data_received(self, data: bytes) -> None:
        # aiohttp keeps no public count of parsed heads; these two are its own.
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self.stop_head_deadline()
            self.latest_body = self._messages[-1][1] if self._messages else None
        elif data and self.head_deadline is None and self.awaiting_head():
            self.start_head_deadline()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.stop_head_deadline()
        if self.address is not None:
            self.limits.close_connection(self.address)
            self.address = None
        super().connection_lost(exc)

    def awaiting_head(self) -> bool:
        """True when the next byte can only belong to a new request head."""
        return self.transport is not None and (
            self.latest_body is None or self.latest_body.is_eof())

    def start_head_deadline(self) -> None:
        self.head_deadline = self._loop.call_later(self.limits.header_timeout,
                                                   self.head_deadline_passed)

    def stop_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def head_deadline_passed(self) -> None:
        self.head_deadline = None
        self.limits.log_event("header_timeout", self.address)
        self.force_close()


class LimitedServer(web.Server):
    """aiohttp's low-level server, making LimitedRequestHandler connections."""

    def __init__(self, handler, *, limits: Limits, **kwargs):
        super().__init__(handler, **kwargs)
        self.limits = limits

    def __call__(self) -> LimitedRequestHandler:
        return LimitedRequestHandler(self, self.limits, loop=self._loop, **self._kwargs)


class LimitedAppRunner(web.AppRunner):
    """An AppRunner whose server is a LimitedServer with the app's settings."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs):
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # The settings aiohttp gathered for its handlers (_kwargs: it has no getter).
        return LimitedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation,
                             limits=self.limits, **plain._kwargs)
