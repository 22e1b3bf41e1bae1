#!/usr/bin/env python3
"""A fake OpenAI-compatible chat server, upstream of hushcall's gateway in tests.

Written only with aiohttp and the standard library, never with hushcall.
Started as a subprocess on loopback:

  fake_openai.py [--host 127.0.0.1] [--port 0] [--api-key KEY]

It binds, prints one line `READY <port>` to stdout and nothing else, and
exits 0 on SIGTERM or SIGINT.

Endpoints
  POST /v1/chat/completions   the chat completion (below)
  GET  /_last                 {"count": N, "body": <raw text of the last request body, or
                              null>, "authorization": <its Authorization header, or null>}
  GET  /healthz               {"ok": true}

POST /v1/chat/completions, first failure wins
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


class Upstream:
    def __init__(self, api_key):
        self.api_key = api_key
        self.count = 0
        self.body = None
        self.authorization = None

    def routes(self):
        return [web.post("/v1/chat/completions", self.completions),
                web.get("/_last", self.last),
                web.get("/healthz", self.healthz)]

    async def completions(self, request):
        authorization = request.headers.get("Authorization")
        raw = await request.read()
        self.count += 1
        self.body = raw.decode("utf-8", errors="replace")
        self.authorization = authorization
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return error(401, "bad key")
        try:
            chat = json.loads(raw)
        except ValueError:
            chat = None
        if not isinstance(chat, dict):
            return error(400, "body is not a JSON object")
        model = chat.get("model")
        user_text = last_user_text(chat)
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
        return answer(self.count, model, content)

    async def last(self, request):
        return web.json_response({"count": self.count, "body": self.body,
                                  "authorization": self.authorization})

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
