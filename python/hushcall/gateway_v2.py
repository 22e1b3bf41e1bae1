"""Protocol v2 in the gateway (docs/gateway.md "Protocol v2"; the wire is
docs/protocol-v2.md): the key configs it publishes, and each sealed request
opened, answered and sealed by ``_core.Server.open_v2`` on a worker thread,
a streamed answer handed frame by frame from that thread to the handler
through a bounded channel. Python sees the header values, the frames and
sizes, never the plaintext; the configs are encoded by the core
(``_core.v2_key_configs``).
"""

import asyncio
import collections
import json
import logging
import threading
from typing import Callable, Dict, List, NamedTuple, Optional, Set, Tuple, Union

from aiohttp import web

from . import _core, replay
from .keyring import KeyRing

__all__ = ["V2", "Answer", "ENC_HEADER", "CONFIG_HEADER", "NONCE_HEADER", "ATTESTATION_HEADER",
           "KEY_CONFIG_PROBLEM"]

log = logging.getLogger("hushcall.gateway")

EHBP_KEYS_PATH = "/.well-known/hpke-keys"
HUSHCALL_KEYS_PATH = "/.well-known/hushcall-hpke-keys"
OHTTP_KEYS = "application/ohttp-keys"  # exactly: tinfoil-ehbp refuses any other
ENC_HEADER = "Ehbp-Encapsulated-Key"
CONFIG_HEADER = "Hushcall-Key-Config"
NONCE_HEADER = "Ehbp-Response-Nonce"
ATTESTATION_HEADER = "Hushcall-Attestation"
KEY_CONFIG_PROBLEM = "urn:ietf:params:ehbp:error:key-config"
# A v2 answer goes out in slices of this many bytes of frames, chunked.
WRITE_SLICE = 64 * 1024
# A stream's frames waiting for a slow reader: past either bound the
# stream's emit blocks, so the backend stops reading its upstream and TCP
# pushes back, instead of the gateway buffering without bound.
STREAM_BOUND_BYTES = 256 * 1024
STREAM_BOUND_FRAMES = 64
# How often a waiting stream looks whether its client is still there.
STREAM_POLL = 0.1
EVENT_STREAM = "text/event-stream"
# Maintenance runs at least this often, so a clock jump is noticed.
MAX_MAINTAIN_SLEEP = 60.0
# After a failed maintenance (a full disk, say), try again this soon.
MAINTAIN_RETRY = 5.0


# The per-answer quote of a request that asked for one: response nonce hex ->
# the Hushcall-Attestation value (gateway_attest.answer_attestation, its enc bound).
Quote = Callable[[str], str]


class Answer(NamedTuple):
    """A whole sealed answer: its nonce hex, frames, the core's timings, and
    its Hushcall-Attestation value when it was quoted."""
    nonce: str
    frames: bytes
    timings: dict
    attestation: Optional[str]


def key_config_problem() -> web.Response:
    """EHBP §5.4.2: the client refetches the config and seals afresh."""
    body = json.dumps({"type": KEY_CONFIG_PROBLEM, "title": "key configuration mismatch",
                       "status": 422})
    return web.Response(status=422, text=body, content_type="application/problem+json")


class V2:
    """The v2 side of one gateway: its key ring, its own replay store (a
    request is remembered until its key expires), and the handlers."""

    def __init__(self, server: "_core.Server", keyring: KeyRing,
                 replay_store: replay.ReplayStore):
        self.server = server
        self.keyring = keyring
        self.replay_store = replay_store

    # ---- discovery ---------------------------------------------------------

    async def ehbp_keys(self, request: web.Request) -> web.Response:
        """The newest X25519 config, bare, with its one suite: what EHBP
        clients read."""
        candidates = self.keyring.x25519_candidates()
        if not candidates:
            return web.json_response({"detail": "No key configuration"}, status=503)
        body = _core.v2_key_configs(candidates[:1], bare=True)
        return web.Response(body=body, headers={"Content-Type": OHTTP_KEYS,
                                                "Cache-Control": "no-store"})

    async def hushcall_keys(self, request: web.Request) -> web.Response:
        """Every live config as RFC 9458's list, newest first."""
        return web.Response(body=self.key_config_list(),
                            headers={"Content-Type": OHTTP_KEYS, "Cache-Control": "no-store"})

    def key_config_list(self) -> bytes:
        """The list hushcall_keys serves (and the key-config attestation quotes)."""
        return _core.v2_key_configs(self.live_pairs())

    def live_pairs(self) -> List[Tuple[int, "_core.HpkeKeypair"]]:
        """(key id, key pair) of every live key, newest first."""
        pairs = []
        for key in self.keyring.live_keys():
            keypair = self.keyring.lookup(key.key_id)
            if keypair is not None:  # expired between the two calls
                pairs.append((key.key_id, keypair))
        return pairs

    # ---- one request -------------------------------------------------------

    def candidates(self, key_config: Optional[str]) -> List[Tuple[int, "_core.HpkeKeypair"]]:
        """The keys a request may be opened under: every live key when it
        names its config (the core picks the one named), the live X25519
        keys when it is an EHBP request."""
        return self.live_pairs() if key_config is not None else self.keyring.x25519_candidates()

    def open_and_answer(self, enc: str, key_config: Optional[str], body: bytes,
                        path: str, quote: Optional[Quote] = None
                        ) -> Union[None, Answer, "_core.Exchange"]:
        """On a worker thread: open the request at `path`, refuse it (None)
        if its enc was seen under this key before, else answer it (quoted
        when `quote` is given), or, when it asks for a stream, hand back the
        opened exchange for stream_answer. Failures raise HushcallError with
        http_status."""
        exchange = self.server.open_v2(enc, body, self.candidates(key_config), key_config,
                                       path=path)
        try:
            key_id, _ = exchange.v2_key
            digest, binding = exchange.replay_key
            verdict, _ = self.replay_store.check_and_remember(digest, binding,
                                                              self.expiry_of(key_id))
            if verdict != "new":  # a hushcall client seals afresh on every retry
                return None
            if exchange.is_stream:
                streamed, exchange = exchange, None  # the caller streams and closes it
                return streamed
            (nonce, frames), timings = exchange.answer()
            return Answer(nonce, frames, timings, quote(nonce) if quote is not None else None)
        finally:
            if exchange is not None:
                exchange.close()

    def expiry_of(self, key_id: int) -> float:
        """When key `key_id` stops being accepted: how long its requests are
        remembered. A key that expired meanwhile is remembered a moment, as
        nothing can open under it any more."""
        for key in self.keyring.live_keys():
            if key.key_id == key_id:
                return key.expires
        return self.keyring.clock()

    # ---- rotation ----------------------------------------------------------

    async def maintain_forever(self, executor,
                               on_rotated: Optional[Callable[[str], None]] = None) -> None:
        """Rotate, publish and expire keys as they fall due (a new key is a
        password derivation: on the executor, not the loop); `on_rotated` is
        told the suite of each key this process makes (with several
        processes on one key directory, only the rotator makes keys)."""
        loop = asyncio.get_running_loop()
        self.keyring.on_created = on_rotated
        while True:
            try:
                due = await loop.run_in_executor(executor, self.keyring.maintain)
                # At least every reload_interval: keys other processes wrote are read then.
                wait = min(max(due - self.keyring.clock(), 0.05), MAX_MAINTAIN_SLEEP,
                           self.keyring.reload_interval)
            except Exception as e:  # keep rotating: a stopped ring would expire every key
                log.error("v2 key maintenance failed (%s); retrying", type(e).__name__)
                wait = MAINTAIN_RETRY
            await asyncio.sleep(wait)


def answer_headers(answer: Answer) -> Dict[str, str]:
    headers = {"Content-Type": "application/json", NONCE_HEADER: answer.nonce}
    if answer.attestation is not None:
        headers[ATTESTATION_HEADER] = answer.attestation
    return headers


async def send_frames(request: web.Request, answer: Answer) -> web.StreamResponse:
    """The sealed answer, chunked (EHBP §4.3: no Content-Length)."""
    response = web.StreamResponse(status=200, headers=answer_headers(answer))
    response.enable_chunked_encoding()
    await response.prepare(request)
    frames = answer.frames
    for start in range(0, len(frames), WRITE_SLICE):
        await response.write(frames[start:start + WRITE_SLICE])
    await response.write_eof()
    request["bytes_out"] = len(frames)
    return response


# ---- streamed answers ---------------------------------------------------------


class FrameChannel:
    """A stream's frames, from the worker thread running Exchange.stream to
    the handler writing them. At most STREAM_BOUND_BYTES or
    STREAM_BOUND_FRAMES wait; past that, emit blocks until the handler has
    written some (back-pressure to the backend). close() (the client left,
    or the handler ended) makes every emit answer "stop" within
    STREAM_POLL. With `quote`, the first frames wait on the worker for the
    answer's quote (`attestation`), so the head can carry it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, quote: Optional[Quote] = None):
        self.loop = loop
        self.quote = quote
        self.attestation: Optional[str] = None
        self.exchange: Optional["_core.Exchange"] = None
        self.lock = threading.Condition()
        self.frames: collections.deque = collections.deque()
        self.size = 0
        self.closed = False
        self.finished = False
        self.ready = asyncio.Event()

    def full(self) -> bool:
        return self.size >= STREAM_BOUND_BYTES or len(self.frames) >= STREAM_BOUND_FRAMES

    # ---- the worker's side ----

    def emit(self, frames: Optional[bytes]) -> bool:
        """Exchange.stream's emit: queue `frames` (None: only asks); True
        to stop the stream."""
        if frames is not None and self.quote is not None and self.attestation is None:
            # The nonce is set from the first frames on; a failed quote stops the stream.
            self.attestation = self.quote(self.exchange.response_nonce)
        with self.lock:
            while frames is not None and self.full() and not self.closed:
                self.lock.wait(STREAM_POLL)
            if self.closed:
                return True
            if frames is not None:
                self.frames.append(frames)
                self.size += len(frames)
                self.loop.call_soon_threadsafe(self.ready.set)
            return False

    def run(self, exchange: "_core.Exchange") -> str:
        """Stream `exchange` into the channel; its nonce hex. Always marks
        the channel finished and closes the exchange."""
        self.exchange = exchange
        try:
            return exchange.stream(self.emit)
        finally:
            exchange.close()
            with self.lock:
                self.finished = True
            self.loop.call_soon_threadsafe(self.ready.set)

    # ---- the handler's side ----

    async def take(self) -> Tuple[List[bytes], bool]:
        """The frames waiting (after at most STREAM_POLL), and whether the
        stream has ended."""
        try:
            await asyncio.wait_for(self.ready.wait(), STREAM_POLL)
        except TimeoutError:
            pass
        with self.lock:
            self.ready.clear()
            frames = list(self.frames)
            self.frames.clear()
            self.size = 0
            self.lock.notify_all()
            return frames, self.finished

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def stream_answer(request: web.Request, executor, exchange: "_core.Exchange",
                        streams: Set[FrameChannel], nonce_header: bool = True,
                        quote: Optional[Quote] = None) -> web.StreamResponse:
    """Answer a request for a stream: the exchange runs on the executor, and
    each frame it emits is written at once, the response head (200,
    text/event-stream, Ehbp-Response-Nonce, chunked) with the first. A
    failure before the first frame is answered as usual; one after it cuts
    the connection, so the client sees a truncated stream. A client that
    leaves stops the stream within a second. With `quote` the head carries
    the answer's Hushcall-Attestation, quoted before the first frame. The channel is in `streams`
    while it runs, so a gateway that stops can close what is still open."""
    loop = asyncio.get_running_loop()
    channel = FrameChannel(loop, quote)
    streams.add(channel)
    worker = loop.run_in_executor(executor, channel.run, exchange)
    # Its outcome is read below, or not at all when the client left first.
    worker.add_done_callback(lambda done: done.cancelled() or done.exception())
    response, sent, gone = None, 0, False
    try:
        finished = False
        while not finished and not gone:
            frames, finished = await channel.take()
            gone = client_gone(request)
            if frames and not gone and response is None:
                response = await start_stream(request, exchange, nonce_header,
                                              channel.attestation)
            for frame in frames if not gone else ():
                await response.write(frame)
                sent += len(frame)
        channel.close()
        if not gone:
            await worker  # the outcome: raises HushcallError
    except ConnectionError:
        gone = True  # the client left while a frame was being written
    except Exception:
        if response is None:
            raise  # nothing sent yet: the handler answers with its status
        log.warning("a stream failed after its head; its connection is cut")
        if request.transport is not None:
            request.transport.abort()
    finally:
        channel.close()
        streams.discard(channel)
        request["bytes_out"] = sent
    if response is None:  # the client left before anything was sent
        response = web.Response(status=499)
    return response


async def start_stream(request: web.Request, exchange: "_core.Exchange",
                       nonce_header: bool, attestation: Optional[str]) -> web.StreamResponse:
    headers = {"Content-Type": EVENT_STREAM, "Cache-Control": "no-store"}
    if nonce_header:
        headers[NONCE_HEADER] = exchange.response_nonce
    if attestation is not None:
        headers[ATTESTATION_HEADER] = attestation
    response = web.StreamResponse(status=200, headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response
