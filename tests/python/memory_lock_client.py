"""Run by test_memory_limit.py as a child process, with or without locked memory
to spare: whole answers (Client from several threads, AsyncClient), a streamed
one and an encode() through hushcall against the gateway at argv[1] (API key
argv[2]); prints one JSON line of what came back, whether each was locked, the
MemoryLockWarnings issued and the process's lock failures."""

import asyncio
import concurrent.futures
import json
import sys
import warnings

import hushcall

CALLS = 3


def chat(text, **extra):
    return dict(model="m", messages=[{"role": "user", "content": text}], **extra)


def streamed_text(chunks):
    return "".join(c.choices[0].delta.get("content", "") for c in chunks if len(c.choices))


async def async_answer(url, api_key):
    async with hushcall.AsyncClient(url, allow_http=True, api_key=api_key) as client:
        return await client.chat.completions.create(**chat("async call"))


def main(url, api_key):
    with warnings.catch_warnings(record=True) as caught:
        # Every warning shown: the once is hushcall's own, not the filter's.
        warnings.simplefilter("always")
        client = hushcall.Client(url, allow_http=True, api_key=api_key)
        # From several threads at once: the once must hold across them.
        with concurrent.futures.ThreadPoolExecutor(CALLS) as pool:
            answers = list(pool.map(
                lambda i: client.chat.completions.create(**chat("call %d" % i)), range(CALLS)))
        answers.append(asyncio.run(async_answer(url, api_key)))
        chunks = list(client.chat.completions.create(**chat("streamed words", stream=True)))
        encoded = hushcall.encode(chat("encoded"))
    print(json.dumps({
        "texts": [a.choices[0].message.content for a in answers],
        "streamed": streamed_text(chunks),
        "locked": [held.locked for held in answers + chunks + [encoded]],
        "lock_warnings": [str(w.message) for w in caught
                          if issubclass(w.category, hushcall.MemoryLockWarning)],
        "lock_failures": hushcall.get_memory_protection_info()["lock_failures"],
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
