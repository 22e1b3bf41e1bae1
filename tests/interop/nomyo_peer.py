#!/usr/bin/env python3
"""An independent NOMYO v1 server for hushcall's C tests and benchmarks.

Speaks the protocol exactly as the public `nomyo` client expects it (see
docs/protocol-v1.md), written only with aiohttp and `cryptography`, never with
hushcall. Started as a subprocess on loopback:

  nomyo_peer.py [--host 127.0.0.1] [--port 0] [--bits 4096] [--api-key KEY ...]
                [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]

It makes its RSA key, binds, prints one line `READY <port>` to stdout and
nothing else, and exits 0 on SIGTERM or SIGINT. --tls-client-ca demands a
client certificate signed by that CA (mutual TLS).

Endpoints
  GET  /pki/public_key               the server key, PEM SubjectPublicKeyInfo, text/plain
  POST /v1/chat/secure_completion    the sealed chat completion (below)
  GET  /_stats                       {"pubkey_fetches", "completions" (every POST, any
                                     outcome), "by_payload": {id: POSTs},
                                     "arrivals": {id: [time.monotonic() of each POST]}}
  POST /_control                     merge {"pubkey_mode", "pubkey_fail_times"}; 400 for
                                     anything else
  POST /_reset                       clear counters and settings
  POST /plain/echo                   the body back as application/json: unencrypted baseline
  GET  /healthz                      {"ok": true}

/_control settings for /pki/public_key
  pubkey_mode        "ok" (default) | "garbage" (the text "not a key") | "small" (RSA-1024)
                     | "ec" (P-256) | "other" (another RSA-2048 key, for pin tests)
  pubkey_fail_times  the next N fetches answer 503 {"detail": "key service warming up"}

secure_completion checks, first failure wins
  401 {"detail": "Invalid API key"}       --api-key given, bearer token missing or unknown
  400 {"detail": ...}                     X-Payload-ID or X-Public-Key missing, or the
                                          public key is not RSA of at least 2048 bits
  400 {"detail": ...}                     X-Security-Tier not standard/high/maximum
  400 {"detail": "Invalid encrypted payload"}  the body does not open with the server
                                          key, or its plaintext is not a JSON object

The echo model: a 200 answer is this chat.completion, sealed to the client key
with "processed_at" (Unix seconds, an int, as NOMYO sends it) as the package's last member:
  {"id": "chatcmpl-<X-Payload-ID>", "object": "chat.completion",
   "created": <unix time>, "model": <request model>,
   "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                "content": "echo: " + <text of the last "user" message, "" if none>}}],
   "usage": {"prompt_tokens": <whitespace-separated words in all messages' texts>,
             "completion_tokens": <words in the reply, "echo:" included>,
             "total_tokens": <their sum>},
   "x_seen": {"authorization", "security_tier", "user_agent": <header or null>,
              "payload_id", "content_type": <header>,
              "request_keys": <sorted top-level keys of the request>},
   "_metadata": {"server": "nomyo-peer", "security_tier": <tier or "standard">}}
A message's text is its content if that is a string, the concatenation (no
separator) of the "text" of its {"type": "text"} parts if it is a list, else "".

Test controls: an "x_test" object in the decrypted request changes the answer
  times N       apply the rest only to the first N POSTs with this X-Payload-ID
                (retries reuse the id); default every POST
  delay_ms D    sleep D ms first; combines with any of the below
  drop          close the connection without a response (curl: "Empty reply")
  status S      answer S with {"detail": <detail, default "injected">}, or with
                "body" as raw text/plain instead; "retry_after" R adds a
                Retry-After header (an int as seconds, a string verbatim)
  garbage       answer 200 "not a package" as application/octet-stream
  wrong_key     answer 200 with a good package sealed to a key not the client's
drop wins over status, status over garbage, garbage over wrong_key.
"""
import argparse
import asyncio
import json
import logging
import signal
import ssl
import sys
import time
import urllib.parse

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from v1_envelope import open_package, seal

TIERS = ("standard", "high", "maximum")
SETTINGS = ("pubkey_mode", "pubkey_fail_times")
INVALID_PACKAGE = "Invalid encrypted payload"
# 16 MiB of plaintext grows by a third in base64, plus the JSON around it.
MAX_BODY = 40 * 1024 * 1024


def pem(public_key):
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def open_request(private_key, body):
    """The decrypted request object; ValueError, TypeError, KeyError or InvalidTag otherwise."""
    request = json.loads(open_package(private_key, body))
    if not isinstance(request, dict):
        raise ValueError("request is not an object")
    return request


def text_of(message):
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part["text"] for part in content
                       if isinstance(part, dict) and part.get("type") == "text"
                       and isinstance(part.get("text"), str))
    return ""


def echo(chat, request, payload_id, tier):
    messages = chat.get("messages")
    messages = messages if isinstance(messages, list) else []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    reply = "echo: " + (text_of(users[-1]) if users else "")
    prompt_tokens = sum(len(text_of(m).split()) for m in messages)
    completion_tokens = len(reply.split())
    return {
        "id": "chatcmpl-" + payload_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "x_seen": {
            "authorization": request.headers.get("Authorization"),
            "security_tier": tier,
            "payload_id": payload_id,
            "content_type": request.headers.get("Content-Type"),
            "user_agent": request.headers.get("User-Agent"),
            "request_keys": sorted(chat),
        },
        "_metadata": {"server": "nomyo-peer", "security_tier": tier or "standard"},
    }


def error(status, detail, headers=None):
    return web.json_response({"detail": detail}, status=status, headers=headers)


def client_key_from(quoted):
    """The client's RSA public key from X-Public-Key, or None if it is unusable."""
    try:
        key = serialization.load_pem_public_key(urllib.parse.unquote(quoted).encode())
    except ValueError:
        return None
    return key if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048 else None


async def injected(request, control):
    """The response x_test asks for, or None to go on with the echo answer."""
    if control.get("delay_ms"):
        await asyncio.sleep(control["delay_ms"] / 1000)
    if control.get("drop"):
        if request.transport is not None:
            # A FIN before any byte of a response: curl reports "Empty reply".
            request.transport.close()
        # aiohttp sees the transport closing and writes nothing of this.
        return web.Response()
    if "status" in control:
        headers = {}
        if "retry_after" in control:
            headers["Retry-After"] = str(control["retry_after"])
        if "body" in control:
            return web.Response(status=control["status"], text=control["body"], headers=headers)
        return error(control["status"], control.get("detail", "injected"), headers)
    if control.get("garbage"):
        return web.Response(body=b"not a package", content_type="application/octet-stream")
    return None


class Peer:
    def __init__(self, bits, api_keys):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        # Made once so that "other" and wrong_key keep answering with the same key.
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pubkey_texts = {
            "ok": pem(self.key.public_key()),
            "garbage": "not a key",
            "small": pem(rsa.generate_private_key(public_exponent=65537,
                                                  key_size=1024).public_key()),
            "ec": pem(ec.generate_private_key(ec.SECP256R1()).public_key()),
            "other": pem(self.stranger.public_key()),
        }
        self.api_keys = set(api_keys)
        self.reset()

    def reset(self):
        self.pubkey_mode = "ok"
        self.pubkey_fail_times = 0
        self.pubkey_fetches = 0
        self.completions = 0
        self.by_payload = {}
        self.arrivals = {}

    def routes(self):
        return [
            web.get("/pki/public_key", self.public_key),
            web.post("/v1/chat/secure_completion", self.secure_completion),
            web.get("/_stats", self.stats),
            web.post("/_control", self.control),
            web.post("/_reset", self.reset_handler),
            web.post("/plain/echo", self.plain_echo),
            web.get("/healthz", self.healthz),
        ]

    async def public_key(self, request):
        self.pubkey_fetches += 1
        if self.pubkey_fail_times > 0:
            self.pubkey_fail_times -= 1
            return error(503, "key service warming up")
        return web.Response(text=self.pubkey_texts[self.pubkey_mode])

    async def secure_completion(self, request):
        self.completions += 1
        payload_id = request.headers.get("X-Payload-ID")
        attempt = 0
        if payload_id:
            attempt = self.by_payload.get(payload_id, 0) + 1
            self.by_payload[payload_id] = attempt
            self.arrivals.setdefault(payload_id, []).append(time.monotonic())

        if self.api_keys:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or token not in self.api_keys:
                return error(401, "Invalid API key")
        if not payload_id:
            return error(400, "Missing X-Payload-ID header")
        if not request.headers.get("X-Public-Key"):
            return error(400, "Missing X-Public-Key header")
        recipient = client_key_from(request.headers["X-Public-Key"])
        if recipient is None:
            return error(400, "X-Public-Key is not an RSA public key of at least 2048 bits")
        tier = request.headers.get("X-Security-Tier")
        if tier is not None and tier not in TIERS:
            return error(400, "Invalid security tier")

        body = await request.read()
        loop = asyncio.get_running_loop()
        # RSA in a worker thread, so the loop keeps accepting under load.
        try:
            chat = await loop.run_in_executor(None, open_request, self.key, body)
        except (ValueError, TypeError, KeyError, InvalidTag):
            return error(400, INVALID_PACKAGE)

        control = chat.get("x_test")
        if isinstance(control, dict) and attempt <= control.get("times", attempt):
            response = await injected(request, control)
            if response is not None:
                return response
            if control.get("wrong_key"):
                recipient = self.stranger.public_key()

        answer = json.dumps(echo(chat, request, payload_id, tier)).encode()
        processed_at = int(time.time())
        package = await loop.run_in_executor(None, seal, recipient, answer, processed_at)
        return web.Response(body=package, content_type="application/octet-stream")

    async def stats(self, request):
        return web.json_response({"pubkey_fetches": self.pubkey_fetches,
                                  "completions": self.completions,
                                  "by_payload": self.by_payload,
                                  "arrivals": self.arrivals})

    async def control(self, request):
        try:
            settings = await request.json()
        except ValueError:
            settings = None
        if not isinstance(settings, dict) or not set(settings) <= set(SETTINGS):
            return error(400, "expected an object with only " + ", ".join(SETTINGS))
        mode = settings.get("pubkey_mode", self.pubkey_mode)
        fail_times = settings.get("pubkey_fail_times", self.pubkey_fail_times)
        if mode not in self.pubkey_texts:
            return error(400, "unknown pubkey_mode")
        if type(fail_times) is not int or fail_times < 0:
            return error(400, "pubkey_fail_times must be a count")
        self.pubkey_mode, self.pubkey_fail_times = mode, fail_times
        return web.json_response({"ok": True})

    async def reset_handler(self, request):
        self.reset()
        return web.json_response({"ok": True})

    async def plain_echo(self, request):
        return web.Response(body=await request.read(), content_type="application/json")

    async def healthz(self, request):
        return web.json_response({"ok": True})


def tls_context(args):
    if not args.tls_cert:
        return None
    # A bare server context: no system CAs, so only --tls-client-ca can vouch for clients.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_client_ca:
        context.load_verify_locations(args.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def serve(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    peer = Peer(args.bits, args.api_key)
    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes(peer.routes())
    # No access log: stdout carries only READY, and requests are never logged.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port, ssl_context=tls_context(args)).start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bits", type=int, default=4096)
    parser.add_argument("--api-key", action="extend", nargs="+", default=[])
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-client-ca")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
