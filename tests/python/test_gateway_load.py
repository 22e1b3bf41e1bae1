"""A load run against the reference gateway: 2,000 sealed completions at 64
in flight from one hushcall.AsyncClient to one echo gateway, each with its
own question. Every answer is checked, none may fail, and the gateway's
access log must account for each request exactly once. Nothing here is
timed: speed is bench/bench_gateway.py's business."""

import asyncio
import json

import hushcall

from processes import Gateway

REQUESTS = 2000
CONCURRENCY = 64
PATH = "/v1/chat/secure_completion"


def question(i):
    return "load question number %d: is %d prime? %s" % (i, i * 7919, "ü" * (i % 5))


async def load(url):
    client = hushcall.AsyncClient(url, allow_http=True, protocol="v1", key_bits=2048,
                                  max_retries=0)
    gate = asyncio.Semaphore(CONCURRENCY)
    in_flight = peak = 0

    async def one(i):
        nonlocal in_flight, peak
        async with gate:
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                resp = await client.create(
                    model="load-%d" % i, messages=[{"role": "user", "content": question(i)}])
            finally:
                in_flight -= 1
        content = resp["choices"][0]["message"]["content"]
        model = resp["model"]
        payload_id = resp["_metadata"]["payload_id"]
        return (i, str(content), str(model), str(payload_id))

    try:
        # one request first, so the client key and the server key fetch are
        # not raced by 64 tasks
        await one(-1)
        results = await asyncio.gather(*(one(i) for i in range(REQUESTS)),
                                       return_exceptions=True)
    finally:
        await client.aclose()
    return results, peak


def test_load_2000_requests(tmp_path):
    gw = Gateway(tmp_path, "--log-format", "json")
    try:
        results, peak = asyncio.run(load(gw.url))
    finally:
        status = gw.stop()
    log = gw.log()
    assert status == 0, log

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, "%d errors, first: %r" % (len(errors), errors[:3])
    assert len(results) == REQUESTS
    assert peak == CONCURRENCY
    payload_ids = set()
    for i, content, model, payload_id in results:
        assert content == "echo: " + question(i)
        assert model == "load-%d" % i
        payload_ids.add(payload_id)
    assert len(payload_ids) == REQUESTS

    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    completions = [r for r in records if r["path"] == PATH]
    assert len(completions) == REQUESTS + 1  # the warm-up request too
    assert all(r["status"] == 200 for r in completions), \
        [r for r in completions if r["status"] != 200][:3]
    assert all(r["method"] == "POST" for r in completions)
    logged_ids = {r["payload_id"] for r in completions}
    assert payload_ids <= logged_ids
    assert len(logged_ids) == REQUESTS + 1
    # prompts and answers never reach the log
    assert "load question number" not in log
    assert "echo: " not in log
