"""The gateway's TPM attestation endpoints (docs/attestation.md "Attest, then
send" and "Enrolling an AIK", docs/gateway.md "TPM attestation"): a quote
over the v2 key configs bound to a client's nonce, the EK certificate and the
AIK's public area, TPM2_ActivateCredential for enrolment, and the per-answer
quote of a v2 exchange. Every TPM call runs on a worker thread; the quote
rate limit covers each of them.
"""

import asyncio
import base64
import binascii
import json
import logging
import math
import re
from typing import Callable, Dict, List, Optional

from aiohttp import web

from . import _core
from .errors import HushcallError

__all__ = ["ATTESTATION_PATH", "ENROLLMENT_PATH", "ACTIVATION_PATH", "TpmAttestation",
           "routes", "answer_attestation"]

log = logging.getLogger("hushcall.gateway")

ATTESTATION_PATH = "/.well-known/hushcall-attestation"
ENROLLMENT_PATH = ATTESTATION_PATH + "/enrollment"
ACTIVATION_PATH = ATTESTATION_PATH + "/activation"
NONCE = re.compile(r"[0-9a-f]{64}")  # 32 bytes, lowercase hex, nothing else
NO_TPM = "No TPM attestation"
NOT_ACTIVATED = "The credential did not activate"
# Two TPM2B blobs of at most a few hundred bytes each, in base64 and JSON.
MAX_ACTIVATION_BYTES = 8 * 1024
ACTIVATION_FIELDS = ("id_object", "encrypted_secret")
NO_STORE = {"Cache-Control": "no-store"}


def refusal(status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def answer_attestation(tpm: "_core.Tpm", enc_hex: str, nonce_hex: str) -> str:
    """On a worker thread: the Hushcall-Attestation value of one v2 answer,
    a quote over the request's enc and the answer's response nonce (both
    hex as on the wire, already checked by the core), base64 of its JSON.
    A quote that fails fails its request with 503, as on v1."""
    qualifying = _core.attest_answer_qualifying(bytes.fromhex(enc_hex),
                                                bytes.fromhex(nonce_hex))
    try:
        quote = tpm.quote_bound(qualifying)
    except HushcallError as e:
        e.http_status = 503
        raise
    return base64.b64encode(quote.encode("utf-8")).decode("ascii")


class TpmAttestation:
    """The endpoints of a gateway with a TPM. `take_quote` takes a token of
    the gateway's quote bucket (0, or the seconds until there is one);
    `key_configs` is the list /.well-known/hushcall-hpke-keys serves now,
    or None without v2; `body_timeout` bounds reading an activation."""

    def __init__(self, tpm: "_core.Tpm", executor, take_quote: Callable[[], float],
                 key_configs: Optional[Callable[[], bytes]], body_timeout: float):
        self.tpm = tpm
        self.executor = executor
        self.take_quote = take_quote
        self.key_configs = key_configs
        self.body_timeout = body_timeout

    def over_rate(self) -> Optional[web.Response]:
        wait = self.take_quote()
        if wait > 0:
            return refusal(503, "TPM quote rate exceeded",
                           {"Retry-After": str(max(1, math.ceil(wait)))})
        return None

    async def on_worker(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    # ---- attest, then send -----------------------------------------------

    async def key_config_attestation(self, request: web.Request) -> web.Response:
        """GET ?nonce=<64 lowercase hex>: the key configs and a quote binding
        them to the nonce."""
        nonces = request.query.getall("nonce", [])
        if len(nonces) != 1 or not NONCE.fullmatch(nonces[0]):
            return refusal(400, "nonce must be 64 lowercase hex digits, once")
        if self.key_configs is None:
            return refusal(404, "No v2 key configuration to attest (--no-v2)")
        refused = self.over_rate()
        if refused is not None:
            return refused
        configs = self.key_configs()  # what the key list serves at this moment
        try:
            quote = await self.on_worker(self.quote_configs, bytes.fromhex(nonces[0]), configs)
        except HushcallError as e:
            return self.tpm_failed("key-config quote", e)
        body = '{"key_configs":%s,"tpm_attestation":%s}' % (
            json.dumps(base64.b64encode(configs).decode("ascii")), quote)
        return web.Response(text=body, content_type="application/json", headers=NO_STORE)

    def quote_configs(self, nonce: bytes, configs: bytes) -> str:
        """On a worker thread: the quote's JSON object text, as the core wrote it."""
        return self.tpm.quote_bound(_core.attest_key_config_qualifying(nonce, configs))

    # ---- enrolment -----------------------------------------------------------

    async def enrollment(self, request: web.Request) -> web.Response:
        """GET: the EK certificate (DER) and the persistent AIK's TPM2B_PUBLIC."""
        refused = self.over_rate()
        if refused is not None:
            return refused
        try:
            ek_certificate, aik_public = await self.on_worker(self.read_enrollment)
        except HushcallError as e:
            return missing_for_enrolment(e) or self.tpm_failed("enrolment", e)
        return web.json_response({"ek_certificate": base64.b64encode(ek_certificate).decode(),
                                  "aik_public": base64.b64encode(aik_public).decode()},
                                 headers=NO_STORE)

    def read_enrollment(self):
        """On a worker thread: the AIK first, so a gateway without a
        persistent one says so whatever its NV holds."""
        aik_public = self.tpm.aik_public()
        return self.tpm.ek_certificate(), aik_public

    async def activation(self, request: web.Request) -> web.Response:
        """POST {"id_object", "encrypted_secret"} (base64 of the marshalled
        TPM2B blobs): the secret TPM2_ActivateCredential recovers."""
        try:
            async with asyncio.timeout(self.body_timeout):
                blobs = await read_activation(request)
        except TimeoutError:
            return refusal(408, "Request body not received in time", {"Connection": "close"})
        if isinstance(blobs, web.Response):
            return blobs
        refused = self.over_rate()
        if refused is not None:
            return refused
        try:
            secret = await self.on_worker(self.tpm.activate_credential, *blobs)
        except HushcallError as e:
            if e.kind == "auth":
                return refusal(400, NOT_ACTIVATED)
            if e.kind == "format":
                return refusal(400, "Malformed credential blobs")
            return missing_for_enrolment(e) or self.tpm_failed("activation", e)
        return web.json_response({"secret": base64.b64encode(secret).decode()},
                                 headers=NO_STORE)

    def tpm_failed(self, what: str, e: HushcallError) -> web.Response:
        log.warning("TPM %s failed: %s", what, getattr(e, "kind", type(e).__name__))
        return refusal(503, "TPM unavailable", {"Retry-After": "1"})


def missing_for_enrolment(e: HushcallError) -> Optional[web.Response]:
    """The 404 naming what the gateway lacks for enrolment, if that is the failure."""
    if e.kind == "unsupported":
        return refusal(404, "No persistent AIK (start the gateway with --tpm-handle)")
    if e.kind == "not_found":
        return refusal(404, "No EK certificate in the TPM's NV")
    return None


async def read_activation(request: web.Request):
    """(id_object, encrypted_secret) as bytes, or the 4xx refusing the body:
    one JSON object with exactly the two members, each strict base64."""
    if (request.content_length or 0) > MAX_ACTIVATION_BYTES:
        return refusal(413, "Request body too large")
    body = bytearray()
    while True:
        chunk = await request.content.read(MAX_ACTIVATION_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
        if len(body) > MAX_ACTIVATION_BYTES:
            return refusal(413, "Request body too large")
    try:
        document = json.loads(bytes(body).decode("utf-8"), object_pairs_hook=unique_members,
                              parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError):
        return refusal(400, "Body must be a JSON object")
    if not isinstance(document, dict) or sorted(document) != sorted(ACTIVATION_FIELDS):
        return refusal(400, "Body must have exactly id_object and encrypted_secret")
    blobs = []
    for name in ACTIVATION_FIELDS:
        value = document[name]
        try:
            blob = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        except (binascii.Error, ValueError):
            blob = b""
        if not blob:
            return refusal(400, "%s must be non-empty standard base64" % name)
        blobs.append(blob)
    return tuple(blobs)


def unique_members(pairs):
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate member")
    return dict(pairs)


def no_constant(name):
    raise ValueError("not JSON: %s" % name)


async def no_tpm(request: web.Request) -> web.Response:
    return refusal(404, NO_TPM)


def routes(attestation: Optional[TpmAttestation]) -> List[web.AbstractRouteDef]:
    """The three endpoints; without a TPM each answers 404 "No TPM attestation"."""
    if attestation is None:
        return [web.get(ATTESTATION_PATH, no_tpm), web.get(ENROLLMENT_PATH, no_tpm),
                web.post(ACTIVATION_PATH, no_tpm)]
    return [web.get(ATTESTATION_PATH, attestation.key_config_attestation),
            web.get(ENROLLMENT_PATH, attestation.enrollment),
            web.post(ACTIVATION_PATH, attestation.activation)]
