#!/usr/bin/env python3
"""The core's layers, bottom to top (docs/architecture.md), and the rule that
holds them apart: a source or header includes only headers of its own layer
or of layers below it, never the umbrella hushcall.h. Run by ctest; prints
every include that crosses upward and exits 1 if there is any, or if a
header belongs to no layer (so a new one must be placed).

  python3 tests/c/check_layers.py [ROOT]
"""

import os
import re
import sys

LAYERS = ["base", "mem", "codec", "crypto", "attest", "client", "server"]

# Each public header belongs to the layer of the module it declares.
PUBLIC = {
    "error.h": "base", "version.h": "base",
    "secmem.h": "mem",
    "json.h": "codec", "json_writer.h": "codec", "base64.h": "codec",
    "keys.h": "crypto", "envelope_v1.h": "crypto",
    "mlkem.h": "crypto", "xwing.h": "crypto", "hpke.h": "crypto", "envelope_v2.h": "crypto",
    "attest.h": "attest", "tpm.h": "attest", "credential.h": "attest", "enroll.h": "attest",
    "client.h": "client", "engine.h": "client",
    "server.h": "server", "replay.h": "server",
}
UMBRELLA = "hushcall/hushcall.h"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of_include(name, including_dir):
    """The layer of the header `#include "name"` names, from a file in including_dir."""
    if name.startswith("hushcall/"):
        return PUBLIC.get(name[len("hushcall/"):])
    if name == "internal.h":
        return "base"
    head, _, _ = name.partition("/")
    if head in LAYERS:
        return head
    return including_dir if including_dir in LAYERS else None  # beside the includer


def files(root):
    src = os.path.join(root, "core", "src")
    for dirpath, _, names in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for n in sorted(names):
            if n.endswith((".c", ".h")):
                layer = "base" if rel == "." else rel.split(os.sep)[0]
                yield os.path.join(dirpath, n), layer, layer
    inc = os.path.join(root, "core", "include", "hushcall")
    for n in sorted(os.listdir(inc)):
        if n.endswith(".h") and n != "hushcall.h":
            yield os.path.join(inc, n), PUBLIC.get(n), None


def check(root):
    problems = []
    for path, layer, directory in files(root):
        shown = os.path.relpath(path, root)
        if layer not in LAYERS:
            problems.append("%s: belongs to no layer (add it to check_layers.py)" % shown)
            continue
        with open(path) as f:
            text = f.read()
        for name in INCLUDE.findall(text):
            if name == UMBRELLA:
                problems.append("%s: includes the umbrella %s" % (shown, name))
                continue
            target = layer_of_include(name, directory)
            if target is None:
                problems.append("%s: includes %s, which belongs to no layer" % (shown, name))
            elif LAYERS.index(target) > LAYERS.index(layer):
                problems.append("%s (%s) includes %s (%s): an upward include"
                                % (shown, layer, name, target))
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
    problems = check(root)
    for p in problems:
        print(p)
    print("layers: %d upward or unplaced include(s)" % len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
