#!/usr/bin/env python3
"""The client layer's one-way rule (docs/architecture.md): client.c knows the
engine, never the reverse. No source under core/src/client/ but client.c may
call a hush__client_* function, name the client's options, or reach through
a call into its client (call->client->...): the engine is handed a
hush__transfer_plan and its hooks instead. Run by ctest; prints every
violation and exits 1 if there is any.

  python3 tests/c/check_one_way.py [ROOT]
"""

import os
import re
import sys

FORBIDDEN = [
    (re.compile(r"\bhush__client_\w+"), "calls into client.c"),
    (re.compile(r"\bhush_client_options\b"), "names the client's options"),
    (re.compile(r"->client->"), "reaches into the client through a call"),
]
COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)


def violations(path):
    with open(path, encoding="utf-8") as f:
        text = COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), f.read())
    for number, line in enumerate(text.split("\n"), 1):
        for pattern, why in FORBIDDEN:
            if pattern.search(line):
                yield "%s:%d: %s (%s)" % (path, number, why, line.strip())


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    client_dir = os.path.join(root, "core", "src", "client")
    sources = sorted(n for n in os.listdir(client_dir) if n.endswith(".c") and n != "client.c")
    if not sources:
        print("one_way: no sources found under %s" % client_dir)
        return 1
    problems = [v for name in sources for v in violations(os.path.join(client_dir, name))]
    for problem in problems:
        print(problem)
    print("one_way: %d source(s) checked, %d violation(s)" % (len(sources), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
