#!/usr/bin/env python3
"""An independent EHBP server (+ hushcall's post-quantum suite), our clients' test peer.

Written from ../shared/refs/ehbp-SPEC.md, RFC 9180, RFC 9458 and docs/protocol-v2.md
only, never with hushcall: X25519 through pyhpke (what tinfoil-ehbp uses), X-Wing
through pyca `cryptography` (its hazmat HPKE opens the first frame; X-Wing
decapsulation and RFC 9180's key schedule are written here over pyca primitives,
because pyca's HPKE Suite is single-shot: no multi-frame context, no Export).
Started as a subprocess on loopback:

  ehbp_server.py [--host 127.0.0.1] [--port 0] [--plain-ehbp] [--max-body BYTES]
                 [--tpm TCTI [--aik-handle 0x81000002] [--pcrs sha256:0,7,10]]
                 [--tls-cert PEM --tls-key PEM]

It binds, prints one line `READY <port>` to stdout and exits 0 on SIGTERM/SIGINT.
--tls-cert/--tls-key serve HTTPS instead of HTTP (a client's "maximum" tier needs it).
--plain-ehbp makes it a plain EHBP server: no X-Wing key, no hushcall endpoint,
Hushcall-Key-Config ignored. A request body over --max-body (default 16 MiB) gets
413 before anything is opened.

--tpm makes it attest as docs/attestation.md's "Attest, then send" and "Enrolling an
AIK" say (written from that text alone), with tpm2-tools against the TPM the TCTI
names (`swtpm:host=127.0.0.1,port=P`): quotes by the persistent restricted signing
key --aik-handle over the PCRs --pcrs (tpm2_quote, tpm2_readpublic), the EK
certificate from NV 0x01c00002 (tpm2_nvread) and TPM2_ActivateCredential with the
RSA EK (tpm2_createek, a PolicySecret(endorsement) session, tpm2_activatecredential).
One lock serializes every TPM use (swtpm serves one connection at a time) and each
flushes what it loaded (swtpm has no resource manager). Without --tpm the attestation
endpoints answer 404 {"detail": "No TPM attestation"}, answers carry no quote and
X-Security-Tier: maximum gets 503 before the body is read.

Endpoints
  GET  /.well-known/hpke-keys           the newest X25519 key config, bare (RFC 9458 §3),
                                        Content-Type exactly application/ohttp-keys
  GET  /.well-known/hushcall-hpke-keys  every live config as RFC 9458 §3.2's length-prefixed
                                        list, newest first (X-Wing: ChaCha20-Poly1305, then
                                        AES-256-GCM); 404 with --plain-ehbp
  GET  /.well-known/hushcall-attestation?nonce=<64 lowercase hex>
                                        {"key_configs": <base64 of the hushcall list above>,
                                        "tpm_attestation": {...}}, Cache-Control: no-store
                                        (404 {"detail"} with --plain-ehbp);
                                        the quote's qualifying data SHA-256("hushcall-v2 key
                                        attestation" || 0x00 || nonce || key_configs); 400
                                        {"detail"} for a bad nonce, 503 when the TPM fails
  GET  /.well-known/hushcall-attestation/enrollment
                                        {"ek_certificate": <base64 DER>, "aik_public":
                                        <base64 TPM2B_PUBLIC>}; 404 {"detail"} when the TPM
                                        has no EK certificate or no key at --aik-handle
  POST /.well-known/hushcall-attestation/activation
                                        {"id_object", "encrypted_secret"} (base64 TPM2Bs) ->
                                        {"secret": <base64>}; 400 {"detail": "The credential
                                        did not activate"} when the TPM refuses it, another
                                        400 {"detail"} for a body that is not two TPM2Bs
  POST /__control                       JSON test controls, answered {"ok": true, ...}:
                                        {"rotate": true}  new keys with new key ids; the old
                                                          ones are refused from then on
                                        {"drop_pq": true} rotate to an X25519 key alone, the
                                                          hushcall list still served: a
                                                          downgrade ({"rotate": true} undoes it)
                                        {"misbehave": MODE[, "size": N]}  the next sealed
                                                          answer misbehaves once, MODE one of
      strip-nonce     a 200 without Ehbp-Response-Nonce (EHBP §5.3: the client must fail)
      bad-nonce       a 31-byte Ehbp-Response-Nonce
      flip-bit        one bit of the first response frame flipped
      truncate        the last byte of the last frame cut off
      plaintext-502   a plaintext 502 "bad gateway" without EHBP headers, as a proxy sends
      oversize-frame  a last frame whose length prefix says N bytes (default 64 MiB + 1,
                      one over tinfoil-ehbp's cap), followed by 16 bytes
      other-enc       the answer sealed for the previous exchange (its enc and export)
                      instead of this one: a swapped response
      unavailable-503 a plaintext 503 after the request was opened (its enc is
                      remembered: a retry that re-sent the same seal gets 409)
                                        {"stream": {...}} how streamed answers are framed and
                                                          how they misbehave, from now on
                                                          ({"stream": {}} restores the default):
      framing         "event" (default): one event per frame; "batch": `batch` events
                      (default 3) per frame; "split": every event cut into frames of
                      `split` plaintext bytes (default 7)
      truncate        end the stream cleanly after this many events (the role chunk
                      counts), with no data: [DONE] and no finish_reason chunk
      tamper          flip one bit of the tag of frame number N (0: the first frame)
      delay_ms        sleep this long before each event
      eol             "\n" (default), "\r\n" or "\r": the line ends of the events
      comments        true: a ": ping" comment line before every event
                                        {"attest": {...}} how the attestation lies, from now
                                                          on ({"attest": {}} restores honesty;
                                                          an unknown member is 400): each
                                                          member true is an attack to refuse
      stale_nonce     the key-config attestation answered with the one made for the
                      previous nonce (the first time: for a random nonce)
      other_configs   the key-config quote made over the list served with its last byte
                      flipped (key_configs itself is the true list)
      relay_answer    an answer's Hushcall-Attestation is the previous exchange's (the
                      first time: a quote over a random nonce and enc)
      no_answer_quote an answer asked for a quote carries no Hushcall-Attestation
      unavailable     the key-config attestation endpoint answers 404
                                        Every control answer carries "posts" (POSTs received
                                        but controls and activations), "attestations"
                                        (key-config attestations served) and "streams": {"started",
                                        "completed", "client_gone"}: streamed answers begun,
                                        sent to their end, and given up because the client
                                        closed the connection ({} changes nothing).
  GET  /v1/models                       a model list in plaintext (EHBP §7.4: bodyless)
  POST /v1/embeddings                   {"object": "list", "data": [{"object": "embedding",
                                        "index": i, "embedding": <8 floats from SHA-256 of
                                        the input>}], ...} for `input` (a string or a list)
  POST /v1/completions                  {"object": "text_completion", "choices": [{"text":
                                        "echo: " + prompt, ...}]}
  A body with "stream": true is answered as OpenAI's server-sent events
  (Content-Type text/event-stream): chat.completion.chunk objects (or text_completion
  ones for /v1/completions): a role chunk, one chunk per word of the echo, a chunk with
  finish_reason "stop", a usage chunk when stream_options.include_usage, then
  data: [DONE]; sealed as the framing above says. Of the misbehaviours, strip-nonce
  and plaintext-502 apply to a streamed answer too.
  POST <any other path>                 the echo completion, sealed per EHBP §4.4:
    {"id": "chatcmpl-ehbp-peer-<n>", "object": "chat.completion", "model": <model>,
     "choices": [{"index": 0, "message": {"role": "assistant",
                  "content": "echo: " + <last user text>}, "finish_reason": "stop"}],
     "usage": {...}, "_peer": {"suite": "ehbp"|"pq", "aead": <id>, "key_id": <id>,
                               "request_frames": <non-empty frames received>}}
    sent as frames of at most 64 plaintext bytes, chunked. A body that is not a JSON
    object gets a sealed 400 {"error": ...}. Without Ehbp-Encapsulated-Key the request
    is plaintext (EHBP §5.2, §7.4) and so is the echo.
  With --tpm, a sealed answer (streamed or not) to a request with X-Attestation: required
  or X-Security-Tier: high or maximum carries Hushcall-Attestation: the base64 of its
  tpm_attestation JSON, the quote's qualifying data SHA-256("hushcall-v2 answer
  attestation" || 0x00 || Ehbp-Response-Nonce || enc); a TPM that fails makes it a
  503. Any other X-Attestation value is 400 "Invalid X-Attestation header", before
  the body is read.

Errors (EHBP §5, docs/protocol-v2.md): 400 "bad request" (one opaque text for every
malformed header, framing or cryptographic failure); 422 application/problem+json
key-config for a Hushcall-Key-Config naming no live key or an EHBP request that opens
under no live X25519 key; 409 for an `enc` already accepted under that key.
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import ssl
import struct
import sys
import tempfile

from aiohttp import web
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

KEM_X25519, KEM_XWING = 0x0020, 0x647A
KDF_SHA256 = 0x0001
AEAD_AES256GCM, AEAD_CHACHA = 0x0002, 0x0003
EHBP_INFO, EHBP_EXPORT = b"ehbp request", b"ehbp response"
PQ_INFO, PQ_EXPORT = b"hushcall-v2 request", b"hushcall-v2 response"
XWING_LABEL = b"\\.//^\\"
NENC = {KEM_X25519: 32, KEM_XWING: 1120}
AEADS = {AEAD_AES256GCM: AESGCM, AEAD_CHACHA: ChaCha20Poly1305}
NK, NN, NH = 32, 12, 32
RESPONSE_NONCE_BYTES = 32
RESPONSE_FRAME_BYTES = 64
MAX_REQUEST_FRAME = 4 * 1024 * 1024
KEY_CONFIG_PROBLEM = "urn:ietf:params:ehbp:error:key-config"
MODES = ("strip-nonce", "bad-nonce", "flip-bit", "truncate", "plaintext-502",
         "oversize-frame", "other-enc", "unavailable-503")
LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})+")


class Refused(Exception):
    """A request refused before the application saw it: `response` says how."""

    def __init__(self, response):
        super().__init__(response.status)
        self.response = response


def bad_request():
    return Refused(web.Response(status=400, text="bad request"))


def key_config_mismatch():
    body = json.dumps({"type": KEY_CONFIG_PROBLEM, "title": "key configuration mismatch"})
    return Refused(web.Response(status=422, text=body, content_type="application/problem+json"))


# ---- RFC 9180 over pyca primitives (X-Wing only; X25519 goes through pyhpke) ----

def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


class Rfc9180Context:
    """A base-mode recipient context: open frames in sequence, Export."""

    def __init__(self, shared_secret, suite_id, info, aead_id):
        def extract(salt, label, ikm):
            return hkdf_extract(salt, b"HPKE-v1" + suite_id + label + ikm)

        def expand(prk, label, ctx, length):
            return hkdf_expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id
                               + label + ctx, length)

        ks_context = (b"\x00" + extract(b"", b"psk_id_hash", b"")
                      + extract(b"", b"info_hash", info))
        secret = extract(shared_secret, b"secret", b"")
        self._aead = AEADS[aead_id](expand(secret, b"key", ks_context, NK))
        self._base_nonce = expand(secret, b"base_nonce", ks_context, NN)
        self._exporter = expand(secret, b"exp", ks_context, NH)
        self._expand = expand
        self._seq = 0

    def open(self, ciphertext, aad=b""):
        nonce = xor_counter(self._base_nonce, self._seq)
        plaintext = self._aead.decrypt(nonce, ciphertext, aad)
        self._seq += 1
        return plaintext

    def export(self, context, length):
        return self._expand(self._exporter, b"sec", context, length)


def xor_counter(base, counter):
    return bytes(a ^ b for a, b in zip(base, counter.to_bytes(len(base), "big")))


class XWingKey:
    """An X-Wing key pair from its 32-byte seed (draft-connolly-cfrg-xwing-kem)."""

    def __init__(self, seed):
        expanded = hashlib.shake_256(seed).digest(96)
        self.mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self.x25519 = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        self.pk_x = self.x25519.public_key().public_bytes_raw()
        self.public_bytes = self.mlkem.public_key().public_bytes_raw() + self.pk_x
        self.pyca = hpke.MLKEM768X25519PrivateKey(self.mlkem, self.x25519)

    def decapsulate(self, enc):
        ct_m, ct_x = enc[:1088], enc[1088:]
        ss_m = self.mlkem.decapsulate(ct_m)
        ss_x = self.x25519.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        return hashlib.sha3_256(ss_m + ss_x + ct_x + self.pk_x + XWING_LABEL).digest()


# ---- keys and configs ------------------------------------------------------------

class PeerKey:
    def __init__(self, key_id, kem_id, aeads):
        self.key_id, self.kem_id, self.aeads = key_id, kem_id, aeads
        self.seen_encs = set()
        if kem_id == KEM_X25519:
            self.suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256,
                                         AEADId.AES256_GCM)
            self.pair = self.suite.kem.derive_key_pair(os.urandom(32))
            self.public_bytes = self.pair.public_key.to_public_bytes()
        else:
            self.xwing = XWingKey(os.urandom(32))
            self.public_bytes = self.xwing.public_bytes

    def config(self):
        suites = b"".join(struct.pack(">HH", KDF_SHA256, a) for a in self.aeads)
        return (struct.pack(">BH", self.key_id, self.kem_id) + self.public_bytes
                + struct.pack(">H", len(suites)) + suites)

    def header(self, aead_id):
        return struct.pack(">BHHH", self.key_id, self.kem_id, KDF_SHA256, aead_id)

    def open_context(self, enc, aead_id, first_frame):
        """(context, first plaintext); InvalidTag or ValueError when it does not open."""
        if self.kem_id == KEM_X25519:
            ctx = self.suite.create_recipient_context(enc, self.pair.private_key, info=EHBP_INFO)
            return ctx, ctx.open(first_frame, b"")
        info = PQ_INFO + b"\x00" + self.header(aead_id)
        suite_id = b"HPKE" + struct.pack(">HHH", KEM_XWING, KDF_SHA256, aead_id)
        ctx = Rfc9180Context(self.xwing.decapsulate(enc), suite_id, info, aead_id)
        first = ctx.open(first_frame)
        pyca_aead = {AEAD_AES256GCM: hpke.AEAD.AES_256_GCM,
                     AEAD_CHACHA: hpke.AEAD.CHACHA20_POLY1305}[aead_id]
        pyca_suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, pyca_aead)
        if pyca_suite.decrypt(enc + first_frame, self.xwing.pyca, info=info) != first:
            raise ValueError("the key schedule disagrees with pyca's HPKE")
        return ctx, first


class KeyRing:
    """The live keys, newest first; key ids unique among them."""

    def __init__(self, with_pq):
        self.with_pq = with_pq
        self.next_id = 0
        self.keys = []
        self.rotate()

    def _new(self, kem_id, aeads):
        key = PeerKey(self.next_id, kem_id, aeads)
        self.next_id = (self.next_id + 1) % 256
        return key

    def rotate(self, drop_pq=False):
        fresh = []
        if self.with_pq and not drop_pq:
            fresh.append(self._new(KEM_XWING, (AEAD_CHACHA, AEAD_AES256GCM)))
        fresh.append(self._new(KEM_X25519, (AEAD_AES256GCM,)))
        self.keys = fresh

    def newest_x25519(self):
        return next(k for k in self.keys if k.kem_id == KEM_X25519)


# ---- request opening -------------------------------------------------------------

def parse_frames(body):
    """EHBP §4.3: the non-empty ciphertexts; Refused(400) on a framing error."""
    frames, offset = [], 0
    while offset < len(body):
        if len(body) - offset < 4:
            raise bad_request()
        (length,) = struct.unpack_from(">I", body, offset)
        offset += 4
        if length > MAX_REQUEST_FRAME or len(body) - offset < length:
            raise bad_request()
        if length:
            frames.append(body[offset:offset + length])
        offset += length
    if not frames:
        raise bad_request()
    return frames


def lower_hex(value, length):
    if len(value) != 2 * length or not LOWER_HEX.fullmatch(value):
        raise bad_request()
    return bytes.fromhex(value)


def candidates(ring, request):
    """[(key, aead_id, export label)] the request may be sealed under."""
    named = request.headers.get("Hushcall-Key-Config")
    if named is None or not ring.with_pq:
        return [(k, AEAD_AES256GCM, EHBP_EXPORT) for k in ring.keys if k.kem_id == KEM_X25519]
    key_id, kem_id, kdf_id, aead_id = struct.unpack(">BHHH", lower_hex(named, 7))
    for key in ring.keys:
        if (key.key_id, key.kem_id) == (key_id, kem_id) and kdf_id == KDF_SHA256 \
                and aead_id in key.aeads:
            export = EHBP_EXPORT if kem_id == KEM_X25519 else PQ_EXPORT
            return [(key, aead_id, export)]
    raise key_config_mismatch()


class Exchange:
    """One opened request: what the answer is sealed with."""

    def __init__(self, key, aead_id, enc, secret, plaintext, frames):
        self.key, self.aead_id, self.enc, self.secret = key, aead_id, enc, secret
        self.plaintext, self.frames = plaintext, frames
        self.quote_answer = False  # whether the answer carries a Hushcall-Attestation


def open_request(ring, request, body):
    encoded = request.headers.get("Ehbp-Encapsulated-Key", "")
    if not LOWER_HEX.fullmatch(encoded):
        raise bad_request()  # malformed whatever the key: 400 before any key lookup
    options = candidates(ring, request)
    frames = parse_frames(body)
    for key, aead_id, export in options:
        enc = lower_hex(encoded, NENC[key.kem_id])
        try:
            ctx, first = key.open_context(enc, aead_id, frames[0])
        except Exception:  # pyhpke, pyca and X25519 each raise their own kind
            continue
        try:
            rest = [ctx.open(f, b"") for f in frames[1:]]
        except Exception:
            raise bad_request()
        if enc in key.seen_encs:
            raise Refused(web.Response(status=409, text="replayed request"))
        key.seen_encs.add(enc)
        secret = ctx.export(export, NK)
        return Exchange(key, aead_id, enc, secret, first + b"".join(rest), len(frames))
    if request.headers.get("Hushcall-Key-Config") is not None and ring.with_pq:
        raise bad_request()  # the named key exists: its request does not open
    raise key_config_mismatch()


# ---- the answer --------------------------------------------------------------------

def response_cipher(exchange, nonce):
    prk = hkdf_extract(exchange.enc + nonce, exchange.secret)
    return (AEADS[exchange.aead_id](hkdf_expand(prk, b"key", NK)),
            hkdf_expand(prk, b"nonce", NN))


def seal_frames(exchange, nonce, plaintext):
    aead, base = response_cipher(exchange, nonce)
    pieces = [plaintext[i:i + RESPONSE_FRAME_BYTES]
              for i in range(0, len(plaintext), RESPONSE_FRAME_BYTES)] or [b""]
    return [aead.encrypt(xor_counter(base, i), piece, b"") for i, piece in enumerate(pieces)]


def last_user_text(chat):
    messages = chat.get("messages") if isinstance(chat.get("messages"), list) else []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    return content if isinstance(content, str) else ""


def completion(count, chat, exchange):
    answer = {
        "id": "chatcmpl-ehbp-peer-%d" % count,
        "object": "chat.completion",
        "created": 0,
        "model": chat.get("model", ""),
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": "echo: " + last_user_text(chat)},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    if exchange is not None:
        answer["_peer"] = {"suite": "ehbp" if exchange.key.kem_id == KEM_X25519 else "pq",
                           "aead": exchange.aead_id, "key_id": exchange.key.key_id,
                           "request_frames": exchange.frames}
    return answer


def embedding_of(text):
    digest = hashlib.sha256(text.encode()).digest()
    return [round((b - 128) / 128.0, 6) for b in digest[:8]]


def embeddings(body):
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
    return {"object": "list", "model": body.get("model", ""),
            "data": [{"object": "embedding", "index": i, "embedding": embedding_of(str(text))}
                     for i, text in enumerate(inputs)],
            "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}}


def text_completion(count, body):
    prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
    return {"id": "cmpl-ehbp-peer-%d" % count, "object": "text_completion", "created": 0,
            "model": body.get("model", ""),
            "choices": [{"index": 0, "text": "echo: " + prompt, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


def application(count, plaintext, exchange, path="/v1/chat/completions"):
    """(status, JSON bytes) the application answers."""
    try:
        chat = json.loads(plaintext)
    except ValueError:
        chat = None
    if not isinstance(chat, dict):
        return 400, json.dumps({"error": {"message": "body is not a JSON object"}}).encode()
    if path == "/v1/embeddings":
        return 200, json.dumps(embeddings(chat)).encode()
    if path == "/v1/completions":
        return 200, json.dumps(text_completion(count, chat)).encode()
    return 200, json.dumps(completion(count, chat, exchange)).encode()


# ---- attestation with a TPM, through tpm2-tools (docs/attestation.md) -----------------

KEY_CONFIG_LABEL = b"hushcall-v2 key attestation"
ANSWER_LABEL = b"hushcall-v2 answer attestation"
ATTEST_NONCE_BYTES = 32
EK_CERT_NV_INDEX = "0x01c00002"  # TCG EK credential profile: the RSA-2048 EK's certificate
CREDENTIAL_FILE_HEADER = struct.pack(">II", 0xBADCC0DE, 1)  # tpm2-tools' credential file
ATTEST_CONTROLS = ("stale_nonce", "other_configs", "relay_answer", "no_answer_quote",
                   "unavailable")


def key_config_qualifying(nonce, configs):
    return hashlib.sha256(KEY_CONFIG_LABEL + b"\x00" + nonce + configs).digest()


def answer_qualifying(response_nonce, enc):
    return hashlib.sha256(ANSWER_LABEL + b"\x00" + response_nonce + enc).digest()


def b64(data):
    return base64.b64encode(data).decode()


def parse_pcr_banks(text):
    """"sha256:0,7,10[+sha1:0]" -> [("sha256", [0, 7, 10]), ...], indices ascending
    (the order the TPM reports them in)."""
    banks = []
    for bank in text.split("+"):
        alg, _, indices = bank.partition(":")
        banks.append((alg, sorted(int(i) for i in indices.split(","))))
    return banks


class TpmFailed(Exception):
    """A tpm2-tools command failed: the TPM refused or could not be reached."""


class Tpm:
    """One TPM behind tpm2-tools. swtpm serves one connection at a time and has no
    resource manager: every use takes the lock, and what a use loads it flushes."""

    DIGEST_BYTES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

    def __init__(self, tcti, aik_handle, pcr_banks):
        self.aik_handle, self.pcr_banks = aik_handle, pcr_banks
        self.banks = parse_pcr_banks(pcr_banks)
        self.dir = tempfile.mkdtemp(prefix="ehbp-peer-tpm-")
        self.env = dict(os.environ, TPM2TOOLS_TCTI=tcti, TSS2_LOG="all+none")
        self.lock = asyncio.Lock()

    def path(self, name):
        return os.path.join(self.dir, name)

    async def tool(self, *argv):
        proc = await asyncio.create_subprocess_exec(
            *argv, env=self.env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise TpmFailed("%s: %s" % (argv[0], stderr.decode(errors="replace").strip()))

    async def flush(self):
        await self.tool("tpm2_flushcontext", "-t")
        await self.tool("tpm2_flushcontext", "-s")

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    async def quote(self, qualifying):
        """The tpm_attestation object of a quote over `qualifying` with the AIK."""
        async with self.lock:
            await self.tool("tpm2_quote", "-c", self.aik_handle, "-l", self.pcr_banks,
                            "-q", qualifying.hex(), "-g", "sha256", "-m", self.path("quote"),
                            "-s", self.path("signature"), "-o", self.path("pcrs"),
                            "-F", "values")
            await self.tool("tpm2_readpublic", "-c", self.aik_handle,
                            "-o", self.path("aik.pub"))
            quote, signature = self.read("quote"), self.read("signature")
            values, aik_public = self.read("pcrs"), self.read("aik.pub")
        return {"is_available": True, "pcr_banks": self.pcr_banks,
                "pcr_values": self.pcr_values(values), "aik_pubkey_b64": b64(aik_public),
                # tpm2_quote writes a bare TPMS_ATTEST; the wire carries a TPM2B_ATTEST
                "quote_b64": b64(struct.pack(">H", len(quote)) + quote),
                "signature_b64": b64(signature)}

    def pcr_values(self, values):
        """The raw digests tpm2_quote wrote (`-F values`: in selection order) by bank."""
        out, offset = {}, 0
        for alg, indices in self.banks:
            size = self.DIGEST_BYTES[alg]
            out[alg] = {}
            for index in indices:
                out[alg][str(index)] = values[offset:offset + size].hex()
                offset += size
        if offset != len(values):
            raise TpmFailed("tpm2_quote wrote %d PCR bytes, not %d" % (len(values), offset))
        return out

    async def enrollment(self):
        """(EK certificate DER, AIK TPM2B_PUBLIC)."""
        async with self.lock:
            await self.tool("tpm2_nvread", EK_CERT_NV_INDEX, "-o", self.path("ek.der"))
            await self.tool("tpm2_readpublic", "-c", self.aik_handle,
                            "-o", self.path("aik.pub"))
            return self.read("ek.der"), self.read("aik.pub")

    async def activate(self, id_object, encrypted_secret):
        """TPM2_ActivateCredential with the AIK and the RSA EK (whose policy is
        PolicySecret(endorsement)): the secret, or TpmFailed when the TPM refuses."""
        async with self.lock:
            with open(self.path("credential"), "wb") as f:
                f.write(CREDENTIAL_FILE_HEADER + id_object + encrypted_secret)
            try:
                os.remove(self.path("secret"))
            except FileNotFoundError:
                pass
            try:
                await self.tool("tpm2_createek", "-G", "rsa", "-c", self.path("ek.ctx"))
                await self.tool("tpm2_startauthsession", "--policy-session",
                                "-S", self.path("session.ctx"))
                await self.tool("tpm2_policysecret", "-S", self.path("session.ctx"), "-c", "e")
                await self.tool("tpm2_activatecredential", "-c", self.aik_handle,
                                "-C", self.path("ek.ctx"), "-i", self.path("credential"),
                                "-o", self.path("secret"),
                                "-P", "session:" + self.path("session.ctx"))
            finally:
                await self.flush()  # a refused activation leaves the EK and session loaded
            return self.read("secret")


def is_one_tpm2b(data):
    """Whether `data` is exactly one marshalled TPM2B: its size, then that many bytes."""
    return len(data) >= 2 and struct.unpack_from(">H", data)[0] == len(data) - 2


# ---- streamed answers -----------------------------------------------------------------

def stream_events(count, body, path):
    """The server-sent events' data (JSON text each, then "[DONE]") of a streamed echo."""
    chat = path != "/v1/completions"
    if chat:
        text = "echo: " + last_user_text(body)
    else:
        text = "echo: " + (body.get("prompt") if isinstance(body.get("prompt"), str) else "")
    base = {"id": ("chatcmpl-ehbp-peer-%d" if chat else "cmpl-ehbp-peer-%d") % count,
            "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
            "model": body.get("model", "")}

    def chunk(piece, finish, role=False):
        if chat:
            delta = {} if piece is None else {"content": piece}
            if role:
                delta = {"role": "assistant", "content": ""}
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece or "", "finish_reason": finish}
        return json.dumps(dict(base, choices=[choice]))

    words = text.split(" ")
    events = [chunk(None, None, role=True)] if chat else []
    events += [chunk(w if i == 0 else " " + w, None) for i, w in enumerate(words)]
    events.append(chunk(None, "stop"))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append(json.dumps(dict(base, choices=[], usage={
            "prompt_tokens": 1, "completion_tokens": len(words),
            "total_tokens": 1 + len(words)})))
    events.append("[DONE]")
    return events


def event_text(data, settings):
    eol = settings.get("eol", "\n")
    comment = ": ping" + eol if settings.get("comments") else ""
    return (comment + "data: " + data + eol + eol).encode()


def stream_frames(event_texts, settings):
    """The plaintext of the frames of these events: one frame each, all in one (a
    batch), or cut into pieces, as `framing` says."""
    framing = settings.get("framing", "event")
    if framing == "batch":
        return [b"".join(event_texts)]
    if framing == "split":
        n = max(1, int(settings.get("split", 7)))
        return [text[i:i + n] for text in event_texts for i in range(0, len(text), n)]
    return list(event_texts)


async def read_capped(request, limit):
    """The whole body, or None past `limit` (read() returns what has arrived)."""
    body = bytearray()
    while not request.content.at_eof():
        body += await request.content.read(64 * 1024)
        if len(body) > limit:
            return None
    return bytes(body)


def detail(status, text):
    return web.json_response({"detail": text}, status=status)


def no_tpm_attestation():
    return detail(404, "No TPM attestation")


class Peer:
    def __init__(self, with_pq, max_body, tpm=None):
        self.ring = KeyRing(with_pq)
        self.max_body = max_body
        self.tpm = tpm
        self.count = 0
        self.misbehave = None
        self.previous = None
        self.stream_settings = {}
        self.streams = {"started": 0, "completed": 0, "client_gone": 0}
        self.attest_settings = {}
        self.attestations = 0
        self.previous_attestation = None  # the key-config answer made for the last nonce
        self.previous_answer_quote = None  # the Hushcall-Attestation of the last exchange

    async def keys(self, request):
        return web.Response(body=self.ring.newest_x25519().config(),
                            headers={"Content-Type": "application/ohttp-keys"})

    def key_config_list(self):
        return b"".join(struct.pack(">H", len(c)) + c for c in
                        (k.config() for k in self.ring.keys))

    async def hushcall_keys(self, request):
        if not self.ring.with_pq:
            raise web.HTTPNotFound()
        return web.Response(body=self.key_config_list(),
                            headers={"Content-Type": "application/ohttp-keys"})

    async def attestation(self, request):
        """The key-config attestation: the list served, quoted with the client's nonce."""
        if self.tpm is None or not self.ring.with_pq or self.attest_settings.get("unavailable"):
            return no_tpm_attestation()
        nonce = request.query.get("nonce", "")
        if len(nonce) != 2 * ATTEST_NONCE_BYTES or not LOWER_HEX.fullmatch(nonce):
            return detail(400, "nonce must be 64 lowercase hex digits")
        configs = self.key_config_list()
        quoted = configs
        if self.attest_settings.get("other_configs"):
            quoted = configs[:-1] + bytes([configs[-1] ^ 0x01])  # one byte of the suites
        try:
            quote = await self.tpm.quote(key_config_qualifying(bytes.fromhex(nonce), quoted))
            answer = {"key_configs": b64(configs), "tpm_attestation": quote}
            served = answer
            if self.attest_settings.get("stale_nonce"):
                served = self.previous_attestation or await self.attestation_for_another_nonce()
        except TpmFailed:
            return detail(503, "TPM quote failed")
        self.previous_attestation = answer
        self.attestations += 1
        return web.json_response(served, headers={"Cache-Control": "no-store"})

    async def attestation_for_another_nonce(self):
        configs = self.key_config_list()
        nonce = os.urandom(ATTEST_NONCE_BYTES)
        return {"key_configs": b64(configs),
                "tpm_attestation": await self.tpm.quote(key_config_qualifying(nonce, configs))}

    async def answer_quote(self, exchange, response_nonce):
        """The Hushcall-Attestation header of this exchange as the controls say: None to
        omit it. TpmFailed when the TPM does not quote."""
        if self.attest_settings.get("no_answer_quote"):
            return None
        honest = b64(json.dumps(await self.tpm.quote(
            answer_qualifying(response_nonce, exchange.enc))).encode())
        sent = honest
        if self.attest_settings.get("relay_answer"):
            sent = self.previous_answer_quote or b64(json.dumps(await self.tpm.quote(
                answer_qualifying(os.urandom(RESPONSE_NONCE_BYTES), os.urandom(len(exchange.enc)))
            )).encode())
        self.previous_answer_quote = honest
        return sent

    async def enrollment(self, request):
        if self.tpm is None:
            return no_tpm_attestation()
        try:
            ek_certificate, aik_public = await self.tpm.enrollment()
        except TpmFailed:
            return detail(404, "No EK certificate or AIK in the TPM")
        return web.json_response({"ek_certificate": b64(ek_certificate),
                                  "aik_public": b64(aik_public)})

    async def activation(self, request):
        if self.tpm is None:
            return no_tpm_attestation()
        try:
            order = await request.json()
            id_object = base64.b64decode(order["id_object"], validate=True)
            encrypted_secret = base64.b64decode(order["encrypted_secret"], validate=True)
        except (ValueError, KeyError, TypeError):
            return detail(400, "id_object and encrypted_secret must be base64 strings")
        if not (is_one_tpm2b(id_object) and is_one_tpm2b(encrypted_secret)):
            return detail(400, "id_object and encrypted_secret must each be one TPM2B")
        try:
            secret = await self.tpm.activate(id_object, encrypted_secret)
        except TpmFailed:
            return detail(400, "The credential did not activate")
        return web.json_response({"secret": b64(secret)})

    async def control(self, request):
        order = await request.json()
        if order.get("rotate") or order.get("drop_pq"):
            self.ring.rotate(drop_pq=bool(order.get("drop_pq")))
        if "misbehave" in order:
            if order["misbehave"] not in MODES:
                return web.json_response({"ok": False, "modes": MODES}, status=400)
            self.misbehave = (order["misbehave"], int(order.get("size", 64 * 1024 * 1024 + 1)))
        if isinstance(order.get("stream"), dict):
            self.stream_settings = dict(order["stream"])
        if isinstance(order.get("attest"), dict):
            unknown = set(order["attest"]) - set(ATTEST_CONTROLS)
            if unknown:
                return web.json_response({"ok": False, "attest": ATTEST_CONTROLS}, status=400)
            self.attest_settings = dict(order["attest"])
        return web.json_response({"ok": True, "key_ids": [k.key_id for k in self.ring.keys],
                                  "streams": self.streams, "posts": self.count,
                                  "attestations": self.attestations})

    async def models(self, request):
        return web.json_response({"object": "list", "data": [
            {"id": "echo", "object": "model", "created": 0, "owned_by": "ehbp-peer"}]})

    def wants_quote(self, request):
        """Whether the answer is to carry a quote (X-Attestation: required, or the high
        or maximum tier); Refused before the body is read when it cannot be."""
        asked = request.headers.get("X-Attestation")
        if asked is not None and asked != "required":
            raise Refused(web.Response(status=400, text="Invalid X-Attestation header"))
        tier = request.headers.get("X-Security-Tier")
        if tier == "maximum" and self.tpm is None:
            raise Refused(web.Response(status=503, text="No TPM for the maximum tier"))
        return self.tpm is not None and (asked == "required" or tier in ("high", "maximum"))

    async def post(self, request):
        self.count += 1
        try:
            quote_answer = self.wants_quote(request)
        except Refused as refused:
            return refused.response
        body = await read_capped(request, self.max_body)
        if body is None:
            return web.Response(status=413, text="body too large")
        if "Ehbp-Encapsulated-Key" not in request.headers:
            status, answer = application(self.count, body, None)
            return web.Response(status=status, body=answer, content_type="application/json")
        try:
            exchange = open_request(self.ring, request, body)
        except Refused as refused:
            return refused.response
        exchange.quote_answer = quote_answer
        body_json = parsed_object(exchange.plaintext)
        if body_json is not None and body_json.get("stream") is True:
            return await self.streamed(request, body_json, exchange)
        status, answer = application(self.count, exchange.plaintext, exchange, request.path)
        return await self.sealed(request, status, answer, exchange)

    async def attested(self, headers, exchange, nonce):
        """Add the answer's quote to `headers` when it was asked for; a 503 Refused
        when the TPM does not quote: such an answer never goes out without one."""
        if not exchange.quote_answer:
            return
        try:
            quote = await self.answer_quote(exchange, nonce)
        except TpmFailed:
            raise Refused(web.Response(status=503, text="TPM quote failed"))
        if quote is not None:
            headers["Hushcall-Attestation"] = quote

    async def streamed(self, request, body, exchange):
        """The events sealed frame by frame as the settings say, sent as they are made."""
        mode, _ = self.misbehave or (None, 0)
        self.misbehave = None
        if mode == "plaintext-502":
            return web.Response(status=502, text="bad gateway")
        settings = self.stream_settings
        events = stream_events(self.count, body, request.path)
        if "truncate" in settings:
            events = events[:int(settings["truncate"])]
        delay = float(settings.get("delay_ms", 0)) / 1000.0
        tamper = settings.get("tamper")
        nonce = os.urandom(RESPONSE_NONCE_BYTES)
        aead, base = response_cipher(exchange, nonce)
        headers = {"Content-Type": "text/event-stream", "Ehbp-Response-Nonce": nonce.hex()}
        try:
            await self.attested(headers, exchange, nonce)
        except Refused as refused:
            return refused.response
        if mode == "strip-nonce":
            del headers["Ehbp-Response-Nonce"]
        response = web.StreamResponse(status=200, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.streams["started"] += 1
        seq = 0

        async def send(piece):
            nonlocal seq
            frame = aead.encrypt(xor_counter(base, seq), piece, b"")
            if tamper is not None and seq == int(tamper):
                frame = frame[:-1] + bytes([frame[-1] ^ 0x01])  # the tag's last byte
            seq += 1
            await response.write(struct.pack(">I", len(frame)) + frame)

        batch = max(1, int(settings.get("batch", 3))) if settings.get("framing") == "batch" else 1
        pending = []
        try:
            for data in events:
                if delay:
                    await asyncio.sleep(delay)
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("the client went away")
                pending.append(event_text(data, settings))
                if len(pending) == batch:
                    for piece in stream_frames(pending, settings):
                        await send(piece)
                    pending = []
            for piece in stream_frames(pending, settings) if pending else []:
                await send(piece)
            await response.write_eof()
        except ConnectionError:  # the client went away: nothing more to send it
            self.streams["client_gone"] += 1
            return response
        self.streams["completed"] += 1
        return response

    async def sealed(self, request, status, answer, exchange):
        mode, size = self.misbehave or (None, 0)
        self.misbehave = None
        sealed_for = exchange
        if mode == "other-enc":
            sealed_for = self.previous or Exchange(exchange.key, exchange.aead_id,
                                                   os.urandom(len(exchange.enc)),
                                                   os.urandom(NK), b"", 0)
        self.previous = exchange
        if mode == "plaintext-502":
            return web.Response(status=502, text="bad gateway")
        if mode == "unavailable-503":
            return web.Response(status=503, text="unavailable")
        nonce = os.urandom(RESPONSE_NONCE_BYTES)
        frames = seal_frames(sealed_for, nonce, answer)
        headers = {"Content-Type": "application/json", "Ehbp-Response-Nonce": nonce.hex()}
        try:
            await self.attested(headers, exchange, nonce)
        except Refused as refused:
            return refused.response
        if mode == "strip-nonce":
            del headers["Ehbp-Response-Nonce"]
        elif mode == "bad-nonce":
            headers["Ehbp-Response-Nonce"] = nonce[:-1].hex()
        elif mode == "flip-bit":
            frames[0] = bytes([frames[0][0] ^ 0x01]) + frames[0][1:]
        wire = [struct.pack(">I", len(f)) + f for f in frames]
        if mode == "truncate":
            wire[-1] = wire[-1][:-1]
        elif mode == "oversize-frame":
            wire.append(struct.pack(">I", size) + b"\x00" * 16)
        response = web.StreamResponse(status=status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in wire:
            await response.write(piece)
        await response.write_eof()
        return response


def parsed_object(plaintext):
    try:
        body = json.loads(plaintext)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def make_app(with_pq, max_body, tpm=None):
    peer = Peer(with_pq, max_body, tpm)
    app = web.Application()
    app.router.add_get("/.well-known/hpke-keys", peer.keys)
    app.router.add_get("/.well-known/hushcall-hpke-keys", peer.hushcall_keys)
    app.router.add_get("/.well-known/hushcall-attestation", peer.attestation)
    app.router.add_get("/.well-known/hushcall-attestation/enrollment", peer.enrollment)
    app.router.add_post("/.well-known/hushcall-attestation/activation", peer.activation)
    app.router.add_post("/__control", peer.control)
    app.router.add_get("/v1/models", peer.models)
    app.router.add_post("/{tail:.*}", peer.post)
    return app


def tls_context(cert, key):
    if not cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def serve(host, port, with_pq, max_body, tpm_args, tls):
    tpm = Tpm(*tpm_args) if tpm_args[0] else None
    runner = web.AppRunner(make_app(with_pq, max_body, tpm), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls_context(*tls))
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    print("READY %d" % bound, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    if tpm is not None:
        shutil.rmtree(tpm.dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--plain-ehbp", action="store_true",
                        help="a plain EHBP server: no X-Wing key, no hushcall endpoint")
    parser.add_argument("--max-body", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--tpm", help="the TCTI of the TPM that quotes (tpm2-tools' -T)")
    parser.add_argument("--aik-handle", default="0x81000002",
                        help="the persistent restricted signing key that quotes")
    parser.add_argument("--pcrs", default="sha256:0,7,10", help="the PCRs quoted")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    asyncio.run(serve(args.host, args.port, not args.plain_ehbp, args.max_body,
                      (args.tpm, args.aik_handle, args.pcrs), (args.tls_cert, args.tls_key)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
