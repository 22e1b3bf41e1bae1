"""Build hushcall: the C core (core/src) and the CPython binding (bindings/python)
compiled together into one extension, hushcall._core, plus the pure-Python
package in python/hushcall.

OpenSSL (libcrypto >= 3), libcurl and tpm2-tss are found with pkg-config; on
Debian: apt-get install pkg-config libssl-dev libcurl4-openssl-dev libtss2-dev.
"""

import glob
import os
import re
import shlex
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def pkg_config(*packages):
    """Flags for `packages`, split into what Extension() takes."""
    try:
        out = subprocess.run(
            ["pkg-config", "--cflags", "--libs", *packages],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except FileNotFoundError:
        raise SystemExit("hushcall: pkg-config not found (apt-get install pkg-config)")
    except subprocess.CalledProcessError as e:
        raise SystemExit(
            "hushcall: pkg-config could not find %s: %s"
            "(apt-get install libssl-dev libcurl4-openssl-dev libtss2-dev)"
            % (" ".join(packages), e.stderr)
        )
    flags = {"include_dirs": [], "library_dirs": [], "libraries": [], "extra_compile_args": []}
    for flag in shlex.split(out):
        if flag.startswith("-I"):
            flags["include_dirs"].append(flag[2:])
        elif flag.startswith("-L"):
            flags["library_dirs"].append(flag[2:])
        elif flag.startswith("-l"):
            flags["libraries"].append(flag[2:])
        else:
            flags["extra_compile_args"].append(flag)
    return flags


def version():
    with open(os.path.join(HERE, "core", "include", "hushcall", "hushcall.h")) as f:
        return re.search(r'#define HUSHCALL_VERSION "([^"]+)"', f.read()).group(1)


# Relative paths: setuptools wants them, and they keep the build reproducible.
os.chdir(HERE)
sources = sorted(glob.glob("core/src/*/*.c")) + sorted(glob.glob("bindings/python/*.c"))
deps = pkg_config("libcrypto", "libcurl", "tss2-esys", "tss2-mu", "tss2-tctildr", "tss2-rc")

core = Extension(
    "hushcall._core",
    sources=sources,
    depends=sorted(glob.glob("core/include/hushcall/*.h") + glob.glob("core/src/*.h") + glob.glob("core/src/*/*.h")
                   + glob.glob("bindings/python/*.h")),
    include_dirs=["core/include", "core/src"] + deps["include_dirs"],
    library_dirs=deps["library_dirs"],
    libraries=deps["libraries"] + ["pthread"],
    extra_compile_args=[
        # The optimisation level of the CMake build (after Python's own -O3,
        # so it wins): the core is built and tested the same way everywhere.
        "-O2",
        "-std=c11",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-fstack-protector-strong",
        "-fno-strict-aliasing",
        # Only PyInit__core is exported: the core's hush_ symbols stay private
        # to the extension, as core/hushcall.map keeps hush__ ones in the
        # shared library.
        "-fvisibility=hidden",
    ]
    + deps["extra_compile_args"],
    extra_link_args=["-Wl,-z,relro,-z,now"],
)

setup(
    name="hushcall",
    version=version(),
    description="End-to-end encrypted chat completions with plaintext kept in locked, zeroed memory",
    python_requires=">=3.9",
    # The gateway (python -m hushcall serve) runs on aiohttp.
    install_requires=["aiohttp>=3.9"],
    package_dir={"": "python"},
    packages=["hushcall"],
    package_data={"hushcall": ["py.typed", "_core.pyi"]},
    ext_modules=[core],
    zip_safe=False,
)
