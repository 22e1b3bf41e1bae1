#!/usr/bin/env python3
"""A fake OpenAI-compatible server, upstream of hushcall's gateway in tests.

Written only with aiohttp and the standard library, never with hushcall.
Started as a subprocess on loopback:

  fake_openai.py [--host 127.0.0.1] [--port 0] [--api-key KEY]

It binds, prints one line `READY <port>` to stdout and nothing else, and
exits 0 on SIGTERM or SIGINT.

Endpoints
  POST /v1/chat/completions   the chat completion (below)
  POST /v1/completions        {"object": "text_completion", "choices": [{"text":
                              "upstream: " + <prompt>, ...}], ...}, streamed too
  POST /v1/embeddings         {"object": "list", "data": [{"object": "embedding", "index": i,
                              "embedding": [0.5, -0.25]}] for each input, "model", "usage"}
  GET  /v1/models             {"object": "list", "data": [{"id": "fake-model", ...}]}
  GET  /_last                 {"count": N, "body": <raw text of the last request body, or
                              null>, "authorization": <its Authorization header, or null>,
                              "path": <its path>, "streams": {"started": N, "client_left": N,
                              "flood_written": N}}
  GET  /healthz               {"ok": true}

Every POST below, first failure wins
  401 {"error": {"message": "bad key"}}   --api-key given and "Authorization: Bearer <key>"
                                          does not match
  400 {"error": {"message": ...}}         the body is not a JSON object
Every POST is recorded for /_last (body, Authorization, count) before any
check. The request's "model" then chooses the answer:
  "fail-500"    500 {"error": {"message": "boom: " + <last user text>}}; it quotes
                the prompt on purpose, so tests can prove the gateway never passes
                an upstream error body on
  "fail-503"    503 {"error": {"message": "overloaded"}}
  "fail-429"    429 {"error": {"message": "overloaded"}}
  "fail-404"    404 {"error": {"message": "no such model"}}
  "slow-<ms>"   sleep <ms> milliseconds, then the normal answer
  "garbage"     200 text/plain "not json"
  "array"       200 application/json [1, 2]
  "big-<n>"     the normal answer with content "x" * n
  anything else the normal answer:
    {"id": "chatcmpl-fake-<count>", "object": "chat.completion", "created": <int time>,
     "model": <model>, "choices": [{"index": 0, "message": {"role": "assistant",
     "content": "upstream: " + <last user text>}, "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
     "_metadata": {"server": "fake-upstream"}}
The last user text is the content of the last message whose role is "user"
when that content is a string, else "".

"stream": true (chat and completions) answers text/event-stream, chunked:
`data: <chunk>` events in OpenAI's shapes, one per word of the normal answer's
text ("upstream: " + text), a chunk with finish_reason "stop", then
`data: [DONE]`. The models that misbehave first (the failing ones above still
fail before any event):
  "stream-slow-<ms>"   <ms> milliseconds between events
  "stream-reset"       two events, then the connection is cut (no chunked end)
  "stream-hang"        one event, then nothing for 60 s; a client that leaves
                       counts in streams.client_left
  "stream-flood-<n>"   <n> events of 16 KiB each, written as fast as the reader
                       takes them; streams.flood_written counts those written so
                       far (a reader that stops reading stops it), a client that
                       leaves counts in streams.client_left
"""
import argparse
import asyncio
import json
import logging
import signal
import sys
import time

from aiohttp import web

MAX_BODY = 64 * 1024 * 1024
HANG_SECONDS = 60.0
FLOOD_EVENT_BYTES = 16 * 1024


def last_user_text(chat):
    messages = chat.get("messages")
    messages = messages if isinstance(messages, list) else []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    return content if isinstance(content, str) else ""


def error(status, message):
    return web.json_response({"error": {"message": message}}, status=status)


def answer(count, model, content):
    return web.json_response({
        "id": f"chatcmpl-fake-{count}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        "_metadata": {"server": "fake-upstream"},
    })


def suffix_int(model, prefix):
    """The integer after `prefix` in `model`, or None."""
    if not isinstance(model, str) or not model.startswith(prefix):
        return None
    try:
        return int(model[len(prefix):])
    except ValueError:
        return None


def words_of(text):
    """The text in pieces of one word and the spaces after it."""
    pieces, piece = [], ""
    for ch in text:
        if piece and not ch.isspace() and piece[-1].isspace():
            pieces.append(piece)
            piece = ""
        piece += ch
    return pieces + ([piece] if piece else [])


def chunk(chat, count, model, piece, finish=None):
    """One streamed chunk: a chat delta, or a completion's text."""
    if chat:
        delta = {} if piece is None else {"content": piece}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
    return {"id": f"fake-{count}", "object": "chat.completion.chunk" if chat else
            "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice]}


def event(data):
    return b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"


def client_gone(request):
    transport = request.transport
    return transport is None or transport.is_closing()


class Upstream:
    def __init__(self, api_key):
        self.api_key = api_key
        self.count = 0
        self.body = None
        self.authorization = None
        self.path = None
        self.streams = {"started": 0, "client_left": 0, "flood_written": 0}

    def routes(self):
        return [web.post("/v1/chat/completions", self.completions),
                web.post("/v1/completions", self.completions),
                web.post("/v1/embeddings", self.embeddings),
                web.get("/v1/models", self.models),
                web.get("/_last", self.last),
                web.get("/healthz", self.healthz)]

    async def record(self, request):
        """The request's JSON object, recorded for /_last, or the refusal."""
        authorization = request.headers.get("Authorization")
        raw = await request.read()
        self.count += 1
        self.body = raw.decode("utf-8", errors="replace")
        self.authorization = authorization
        self.path = request.path
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return error(401, "bad key")
        try:
            chat = json.loads(raw)
        except ValueError:
            chat = None
        if not isinstance(chat, dict):
            return error(400, "body is not a JSON object")
        return chat

    async def embeddings(self, request):
        body = await self.record(request)
        if isinstance(body, web.Response):
            return body
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        return web.json_response({
            "object": "list", "model": body.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": [0.5, -0.25]}
                     for i in range(len(inputs))],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    async def models(self, request):
        return web.json_response({"object": "list", "data": [
            {"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]})

    async def stream(self, request, chat, model, text):
        """The answer as server-sent events, misbehaving as `model` says."""
        self.streams["started"] += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        pieces = words_of(text)
        if model == "stream-hang":
            await response.write(event(chunk(chat, self.count, model, pieces[0])))
            return await self.wait_for_leaving(request, response)
        flood = suffix_int(model, "stream-flood-")
        if flood is not None:
            return await self.flood(request, response, flood)
        delay = suffix_int(model, "stream-slow-") or 0
        for n, piece in enumerate(pieces):
            if n == 2 and model == "stream-reset":
                request.transport.abort()
                return response
            await response.write(event(chunk(chat, self.count, model, piece)))
            await asyncio.sleep(delay / 1000)
        await response.write(event(chunk(chat, self.count, model, None, "stop")))
        await response.write(event(b"[DONE]"))
        await response.write_eof()
        return response

    async def wait_for_leaving(self, request, response):
        """Nothing more for HANG_SECONDS, noting when the client closes."""
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline:
            if client_gone(request):
                self.streams["client_left"] += 1
                return response
            await asyncio.sleep(0.05)
        return response

    async def flood(self, request, response, count):
        """`count` big events as fast as the reader takes them."""
        filler = "f" * FLOOD_EVENT_BYTES
        try:
            for n in range(count):
                await response.write(event({"n": n, "filler": filler}))
                self.streams["flood_written"] = n + 1
        except (ConnectionError, RuntimeError):
            self.streams["client_left"] += 1
            return response
        await response.write(event(b"[DONE]"))
        await response.write_eof()
        return response

    async def completions(self, request):
        chat = await self.record(request)
        if isinstance(chat, web.Response):
            return chat
        model = chat.get("model")
        user_text = last_user_text(chat)
        if request.path == "/v1/completions":
            prompt = chat.get("prompt")
            user_text = prompt if isinstance(prompt, str) else ""
        if model == "fail-500":
            return error(500, "boom: " + user_text)
        if model in ("fail-503", "fail-429"):
            return error(int(model[5:]), "overloaded")
        if model == "fail-404":
            return error(404, "no such model")
        if model == "garbage":
            return web.Response(text="not json", content_type="text/plain")
        if model == "array":
            return web.json_response([1, 2])
        delay = suffix_int(model, "slow-")
        if delay is not None:
            await asyncio.sleep(delay / 1000)
        size = suffix_int(model, "big-")
        content = "x" * size if size is not None else "upstream: " + user_text
        if chat.get("stream") is True:
            return await self.stream(request, request.path == "/v1/chat/completions",
                                     model, content)
        if request.path == "/v1/completions":
            return web.json_response({
                "id": f"cmpl-fake-{self.count}", "object": "text_completion",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "text": content, "logprobs": None,
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
        return answer(self.count, model, content)

    async def last(self, request):
        return web.json_response({"count": self.count, "body": self.body,
                                  "authorization": self.authorization, "path": self.path,
                                  "streams": self.streams})

    async def healthz(self, request):
        return web.json_response({"ok": True})


async def serve(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes(Upstream(args.api_key).routes())
    # No access log: stdout carries only READY, and requests are never logged.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
