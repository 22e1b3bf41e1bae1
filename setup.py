"""Build hushcall: the CPython binding (bindings/python) as the extension
hushcall._core, linked against the C core as CMakeLists.txt builds it, plus
the pure-Python package in python/hushcall.

CMakeLists.txt is the one build description: CMake builds the core's static
library (position independent) and writes hushcall-build.json beside it with
the warning flags, _FORTIFY_SOURCE and the dependencies' link flags, which
the binding is compiled and linked with. Needs cmake, pkg-config and the
development packages of OpenSSL (libcrypto >= 3), libcurl and tpm2-tss
(`make deps` installs them); HUSH_WITH_TPM=OFF in the environment builds
without tpm2-tss.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
WITH_TPM = os.environ.get("HUSH_WITH_TPM", "ON").upper() not in ("OFF", "0", "NO", "FALSE")

# What the build needs, each with the Debian package that provides it.
TOOLS = [("cmake", "cmake"), ("pkg-config", "pkg-config"), ("cc", "build-essential")]
LIBRARIES = [("libcrypto >= 3.0", "libssl-dev"), ("libcurl >= 7.84", "libcurl4-openssl-dev")]
TPM_LIBRARIES = [(m, "libtss2-dev") for m in ("tss2-esys", "tss2-mu", "tss2-tctildr", "tss2-rc")]


def pkg_config_finds(module):
    return subprocess.run(["pkg-config", "--exists", module]).returncode == 0


def missing_debian_packages():
    """The Debian packages whose tools or libraries are not found, in order."""
    missing = [package for tool, package in TOOLS if shutil.which(tool) is None]
    libraries = LIBRARIES + (TPM_LIBRARIES if WITH_TPM else [])
    have_pkg_config = shutil.which("pkg-config") is not None
    missing += [package for module, package in libraries
                if not have_pkg_config or not pkg_config_finds(module)]
    return list(dict.fromkeys(missing))


def require_debian_packages():
    """Stop before anything else with one line naming what to install: pip
    shows the first lines of a failed build, and CMake's own message would
    come deep inside them."""
    missing = " ".join(missing_debian_packages())
    if missing:
        sys.exit("hushcall needs the Debian packages %s (run `make deps`, or apt-get install %s)"
                 % (missing, missing))


class build_ext_on_cmake_core(build_ext):
    """Build the core with CMake first, then the binding with its flags."""

    def run(self):
        core = self.build_core(os.path.join(os.path.abspath(self.build_temp), "core"))
        for ext in self.extensions:
            link_core(ext, core)
        super().run()

    def build_core(self, build_dir):
        subprocess.run(["cmake", "-S", HERE, "-B", build_dir, "--log-level=WARNING",
                        "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DHUSH_BUILD_TESTS=OFF",
                        "-DHUSH_WITH_LUA=OFF", "-DHUSH_INSTALL_LIBRARY=OFF",
                        "-DHUSH_WITH_TPM=" + ("ON" if WITH_TPM else "OFF")], check=True)
        subprocess.run(["cmake", "--build", build_dir, "--target", "hushcall_static",
                        "-j%d" % (self.parallel or 2)], check=True)
        with open(os.path.join(build_dir, "hushcall-build.json")) as f:
            return json.load(f)


def link_core(ext, core):
    """Compile `ext` as CMake compiles the core and link the core into it."""
    ext.include_dirs.append(core["include_dir"])
    ext.extra_compile_args += core["compile_args"] + [
        # The optimisation level of the CMake build (after Python's own -O3,
        # so it wins): the core is built and tested the same way everywhere.
        "-O2",
        # Only PyInit__core is exported; with --exclude-libs the core's hush_
        # symbols stay private to the extension, as core/hushcall.map keeps
        # hush__ ones in the shared library.
        "-fvisibility=hidden",
        # CPython finds PyInit__core by name; no header declares it.
        "-Wno-missing-prototypes",
    ]
    ext.extra_objects.append(core["static_library"])
    ext.depends.append(core["static_library"])
    ext.extra_link_args += core["link_args"] + ["-Wl,--exclude-libs,ALL", "-Wl,-z,relro,-z,now"]


def version():
    with open(os.path.join(HERE, "core", "include", "hushcall", "version.h")) as f:
        return re.search(r'#define HUSHCALL_VERSION "([^"]+)"', f.read()).group(1)


require_debian_packages()
# Relative paths: setuptools wants them, and they keep the build reproducible.
os.chdir(HERE)
core = Extension(
    "hushcall._core",
    sources=sorted(glob.glob("bindings/python/*.c")),
    depends=sorted(glob.glob("core/include/hushcall/*.h") + glob.glob("bindings/python/*.h")),
)

setup(
    name="hushcall",
    version=version(),
    description="End-to-end encrypted chat completions with plaintext kept in locked, zeroed memory",
    python_requires=">=3.9",
    # The gateway (python -m hushcall serve) runs on aiohttp.
    install_requires=["aiohttp>=3.9"],
    # --replay-store: the replay stores shared in Redis.
    extras_require={"redis": ["redis>=4.2"]},
    package_dir={"": "python"},
    packages=["hushcall"],
    package_data={"hushcall": ["py.typed", "_core.pyi"]},
    ext_modules=[core],
    cmdclass={"build_ext": build_ext_on_cmake_core},
    zip_safe=False,
)
