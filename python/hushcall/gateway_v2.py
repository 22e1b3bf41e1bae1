"""Protocol v2 in the gateway (docs/gateway.md "Protocol v2"; the wire is
docs/protocol-v2.md): the key configs it publishes, and each sealed chat
request opened, answered and sealed by ``_core.Server.open_v2`` on a worker
thread. Python sees the header values, the frames and sizes, never the
plaintext; the configs are encoded by the core (``_core.v2_key_configs``).
"""

import asyncio
import json
import logging
from typing import Dict, List, Optional, Tuple

from aiohttp import web

from . import _core, replay
from .keyring import KeyRing

__all__ = ["V2", "ENC_HEADER", "CONFIG_HEADER", "NONCE_HEADER", "KEY_CONFIG_PROBLEM"]

log = logging.getLogger("hushcall.gateway")

EHBP_KEYS_PATH = "/.well-known/hpke-keys"
HUSHCALL_KEYS_PATH = "/.well-known/hushcall-hpke-keys"
OHTTP_KEYS = "application/ohttp-keys"  # exactly: tinfoil-ehbp refuses any other
ENC_HEADER = "Ehbp-Encapsulated-Key"
CONFIG_HEADER = "Hushcall-Key-Config"
NONCE_HEADER = "Ehbp-Response-Nonce"
KEY_CONFIG_PROBLEM = "urn:ietf:params:ehbp:error:key-config"
# A v2 answer goes out in slices of this many bytes of frames, chunked.
WRITE_SLICE = 64 * 1024
# Maintenance runs at least this often, so a clock jump is noticed.
MAX_MAINTAIN_SLEEP = 60.0
# After a failed maintenance (a full disk, say), try again this soon.
MAINTAIN_RETRY = 5.0


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
        pairs = self.live_pairs()
        return web.Response(body=_core.v2_key_configs(pairs),
                            headers={"Content-Type": OHTTP_KEYS, "Cache-Control": "no-store"})

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

    def open_and_answer(self, enc: str, key_config: Optional[str],
                        body: bytes) -> Optional[Tuple[Tuple[str, bytes], dict]]:
        """On a worker thread: open the request, refuse it (None) if its enc
        was seen under this key before, else answer it: ((nonce hex,
        frames), timings). Failures raise HushcallError with http_status."""
        exchange = self.server.open_v2(enc, body, self.candidates(key_config), key_config)
        try:
            key_id, _ = exchange.v2_key
            digest, binding = exchange.replay_key
            verdict, _ = self.replay_store.check_and_remember(digest, binding,
                                                              self.expiry_of(key_id))
            if verdict != "new":  # a hushcall client seals afresh on every retry
                return None
            return exchange.answer()
        finally:
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

    async def maintain_forever(self, executor) -> None:
        """Rotate, publish and expire keys as they fall due (a new key is a
        password derivation: on the executor, not the loop)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                due = await loop.run_in_executor(executor, self.keyring.maintain)
                wait = min(max(due - self.keyring.clock(), 0.05), MAX_MAINTAIN_SLEEP)
            except Exception as e:  # keep rotating: a stopped ring would expire every key
                log.error("v2 key maintenance failed (%s); retrying", type(e).__name__)
                wait = MAINTAIN_RETRY
            await asyncio.sleep(wait)


def answer_headers(nonce: str) -> Dict[str, str]:
    return {"Content-Type": "application/json", NONCE_HEADER: nonce}


async def send_frames(request: web.Request, nonce: str, frames: bytes) -> web.StreamResponse:
    """The sealed answer, chunked (EHBP §4.3: no Content-Length)."""
    response = web.StreamResponse(status=200, headers=answer_headers(nonce))
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(frames), WRITE_SLICE):
        await response.write(frames[start:start + WRITE_SLICE])
    await response.write_eof()
    request["bytes_out"] = len(frames)
    return response
