# hushcall — the README's two commands, and what they stand on.
#   make demo   the reference gateway (echo backend) on a free loopback port,
#               and an encrypted round trip through it from Python and Lua
#   make test   every test suite (C, Python, Lua), plain and under ASan/UBSan
# Both start with `make deps`, which installs whatever is missing.

PYTHON ?= $(shell command -v python3)
JOBS ?= 2
BUILD := build
BUILD_ASAN := build-asan
BUILD_TSAN := build-tsan
BUILD_PYTHON := build-python
BUILD_FUZZ := build-fuzz
BUILD_CLIENT_ONLY := build-client-only
BUILD_OPENSSL35 := build-openssl35
FUZZ_SECONDS ?= 60

APT_PACKAGES := build-essential cmake pkg-config locales libssl-dev libcurl4-openssl-dev libtss2-dev \
                liblua5.4-dev lua5.4 luarocks swtpm swtpm-tools tpm2-tools valgrind curl perl \
                redis-server systemd
# cryptography >= 47 has HPKE and ML-KEM for the live cross-checks;
# cryptography-vectors (pinned) carries RFC 9180's, the HPKE-PQ and NIST's
# ML-KEM known answers, which the C tests read where pip put them.
VECTORS_VERSION := 48.0.0
PIP_PACKAGES := pytest 'cryptography>=47' cryptography-vectors==$(VECTORS_VERSION) nomyo setuptools \
                aiohttp nbclient nbformat ipykernel tinfoil-ehbp==0.4.1 pyhpke httpx openai==2.54.0 \
                prometheus_client redis
PIP_MODULES := pytest,cryptography,cryptography_vectors,nomyo,setuptools,aiohttp,nbclient,nbformat,ipykernel,ehbp,pyhpke,httpx,openai,prometheus_client,redis
# openai 2.x: its http_client is an httpx.Client, as EHBP's transport needs (3.x moved to httpx2)
PIP_VERSIONS_OK := import cryptography, cryptography_vectors, ehbp, openai; \
  assert ehbp.__version__ == '0.4.1', 'tinfoil-ehbp != 0.4.1'; \
  assert openai.__version__ == '2.54.0', 'openai != 2.54.0'; \
  assert int(cryptography.__version__.split('.')[0]) >= 47, 'cryptography < 47'; \
  assert cryptography_vectors.__version__ == '$(VECTORS_VERSION)', 'cryptography-vectors != $(VECTORS_VERSION)'
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

CMAKE_FLAGS := -DPython3_EXECUTABLE=$(PYTHON)

.PHONY: fuzz-build fuzz-long all deps build build-asan build-tsan build-python test test-c test-c-asan test-c-tsan \
        test-c-client-only openssl35 test-c-openssl35 test-python test-lua test-lua-asan demo bench fuzz clean

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null || \
	  { echo "deps: apt-get failed" >&2; exit 1; }; \
	fi
	@# The number-formatting tests run under a comma-decimal locale.
	@locale -a 2>/dev/null | grep -qi '^de_DE\.utf-\?8$$' || { \
	  echo "deps: generating locale de_DE.UTF-8"; \
	  $(SUDO) localedef -i de_DE -f UTF-8 de_DE.UTF-8 || { echo "deps: localedef failed" >&2; exit 1; }; }
	@if ! $(PYTHON) -c "import $(PIP_MODULES); $(PIP_VERSIONS_OK)" 2>/dev/null; then \
	  echo "deps: installing Python packages: $(PIP_PACKAGES)"; \
	  $(PYTHON) -m pip install -q --disable-pip-version-check $(PIP_PACKAGES) || \
	  { echo "deps: pip install failed" >&2; exit 1; }; \
	fi
	@$(PYTHON) -c "import $(PIP_MODULES); $(PIP_VERSIONS_OK)" || \
	  { echo "deps: Python packages still missing or too old" >&2; exit 1; }

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHUSH_SANITIZE= $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

build-asan: deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DHUSH_SANITIZE=address $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD_ASAN) -j$(JOBS)

build-tsan: deps
	cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=Debug -DHUSH_SANITIZE=thread $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD_TSAN) -j$(JOBS) --target test_client test_client_stream test_client_attest test_engine test_server test_tpm test_replay

test-c: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-c-asan: build-asan
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j$(JOBS)

# The threaded suites once more under ThreadSanitizer: the engine's
# correctness rests on its locking, the TPM's on one lock around ESYS, the
# replay cache's on its own.
test-c-tsan: build-tsan
	cd $(BUILD_TSAN) && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j$(JOBS) -R '^(client|client_stream|client_attest|engine|server|tpm|replay)$$'

# The client-only library (no tpm2-tss, no Lua), built once: the suites that
# need no TPM, the stub's own suite, and what `cmake --install` leaves.
test-c-client-only: deps
	cmake -S . -B $(BUILD_CLIENT_ONLY) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHUSH_SANITIZE= \
	  -DHUSH_WITH_TPM=OFF -DHUSH_WITH_LUA=OFF $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD_CLIENT_ONLY) -j$(JOBS) --target hushcall test_json test_envelope_v1 test_no_tpm
	cd $(BUILD_CLIENT_ONLY) && ctest --output-on-failure -j$(JOBS) -R '^(json|envelope_v1|no_tpm|install)$$'

# OpenSSL 3.5 (it has its own ML-KEM-768), built from Debian's source
# package (trixie's orig tarball, checked against its SHA-256) into
# $(BUILD_OPENSSL35)/openssl, because bookworm ships 3.0. About 8 minutes on
# two cores, once: the prefix is kept between runs.
OPENSSL35_VERSION := 3.5.7
OPENSSL35_TARBALL := openssl_$(OPENSSL35_VERSION).orig.tar.gz
OPENSSL35_SHA256 := a8c0d28a529ca480f9f36cf5792e2cd21984552a3c8e4aa11a24aa31aeac98e8
OPENSSL35_URL := http://deb.debian.org/debian/pool/main/o/openssl/$(OPENSSL35_TARBALL)
OPENSSL35_BUILT := $(CURDIR)/$(BUILD_OPENSSL35)/openssl
OPENSSL35_PREFIX ?= $(OPENSSL35_BUILT)/prefix

$(OPENSSL35_BUILT)/prefix/lib/pkgconfig/libcrypto.pc:
	@command -v curl >/dev/null && command -v perl >/dev/null || \
	  { echo "openssl35: needs curl and perl (make deps)" >&2; exit 1; }
	rm -rf $(OPENSSL35_BUILT) && mkdir -p $(OPENSSL35_BUILT)
	curl -fsS -o $(OPENSSL35_BUILT)/$(OPENSSL35_TARBALL) $(OPENSSL35_URL)
	echo "$(OPENSSL35_SHA256)  $(OPENSSL35_BUILT)/$(OPENSSL35_TARBALL)" | sha256sum -c --quiet
	tar -xzf $(OPENSSL35_BUILT)/$(OPENSSL35_TARBALL) -C $(OPENSSL35_BUILT)
	cd $(OPENSSL35_BUILT)/openssl-$(OPENSSL35_VERSION) && \
	  ./Configure --prefix=$(OPENSSL35_BUILT)/prefix --libdir=lib no-tests no-docs no-apps shared >/dev/null && \
	  $(MAKE) -j$(JOBS) build_libs >/dev/null 2>&1 && $(MAKE) install_dev >/dev/null
	rm -rf $(OPENSSL35_BUILT)/openssl-$(OPENSSL35_VERSION) $(OPENSSL35_BUILT)/$(OPENSSL35_TARBALL)

openssl35: deps $(OPENSSL35_BUILT)/prefix/lib/pkgconfig/libcrypto.pc

# The core built against OpenSSL >= 3.5 (OPENSSL35_PREFIX, by default the one
# `make openssl35` builds), where ML-KEM-768 is OpenSSL's own
# (mlkem_openssl.c): the same ML-KEM, X-Wing, HPKE, key-file, cross-check and
# constant-time suites must pass.
OPENSSL35_SUITES := mlkem|xwing|hpke|hpke_keyfile|cross_pyca|consttime|consttime_negative_control
OPENSSL35_SUITES := $(OPENSSL35_SUITES)|fuzz_mlkem_decaps_corpus|fuzz_xwing_decaps_corpus|fuzz_hpke_open_corpus
test-c-openssl35: deps $(if $(filter $(OPENSSL35_BUILT)/prefix,$(OPENSSL35_PREFIX)),openssl35)
	@test -d "$(OPENSSL35_PREFIX)/lib/pkgconfig" || { echo "no OpenSSL at $(OPENSSL35_PREFIX)" >&2; exit 1; }
	PKG_CONFIG_PATH=$(OPENSSL35_PREFIX)/lib/pkgconfig cmake -S . -B $(BUILD_OPENSSL35) \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHUSH_SANITIZE= -DHUSH_WITH_LUA=OFF $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD_OPENSSL35) -j$(JOBS) --target test_mlkem test_xwing test_hpke test_hpke_keyfile \
	  hpke_peer test_consttime fuzz_mlkem_decaps_replay fuzz_xwing_decaps_replay fuzz_hpke_open_replay
	cd $(BUILD_OPENSSL35) && LD_LIBRARY_PATH=$(OPENSSL35_PREFIX)/lib ctest --output-on-failure \
	  -R '^($(OPENSSL35_SUITES))$$'

# The extension hushcall._core, built in place for the tests (pip install .
# is the way to install it).
build-python: deps
	$(PYTHON) setup.py -q build_ext --inplace --build-temp $(BUILD_PYTHON)

# build too: test_differential.py runs the C and Lua clients against the nomyo client.
test-python: build build-python
	PYTHONPATH=python $(PYTHON) -m pytest -q tests/python

# The Lua binding: build/lua/hushcall/core.so with lua/hushcall.lua, against
# the same interop peer (Python) as the other suites; once more with the
# module built under ASan+UBSan (run.py preloads the runtime into lua5.4).
test-lua: build build-python
	$(PYTHON) tests/lua/run.py --build-dir $(BUILD)

test-lua-asan: build-asan build-python
	$(PYTHON) tests/lua/run.py --build-dir $(BUILD_ASAN)

test: test-c test-c-asan test-c-tsan test-c-client-only test-c-openssl35 test-python test-lua test-lua-asan

demo: build build-python
	PYTHONPATH=python $(PYTHON) examples/demo.py $(BUILD)

# Figures, not tests: what a request costs the client, in C and from Python
# beside the nomyo client, what the gateway serves, and streamed answers.
bench: build build-python
	./$(BUILD)/bench_client
	PYTHONPATH=python $(PYTHON) bench/bench_python.py
	PYTHONPATH=python $(PYTHON) bench/bench_gateway.py
	$(PYTHON) bench/bench_crypto.py --binary $(BUILD)/bench_crypto
	PYTHONPATH=python $(PYTHON) bench/bench_v2.py
	PYTHONPATH=python $(PYTHON) bench/bench_stream.py

# Issue 17's soak and load (bench/soak.py, bench/load.py; docs/operations.md
# "Soak and load"): figures, not tests, and not part of `make test`. The soak
# exits 1 on a wrong answer or a process that did not stay flat.
SOAK_REQUESTS ?= 100000
SOAK_IN_FLIGHT ?= 256
LOAD_REQUESTS ?= 10000
LOAD_V1_REQUESTS ?= 2000
LOAD_IN_FLIGHT ?= 256
.PHONY: soak load
soak: build-python
	PYTHONPATH=python $(PYTHON) bench/soak.py --requests $(SOAK_REQUESTS) --in-flight $(SOAK_IN_FLIGHT)

load: build-python
	PYTHONPATH=python $(PYTHON) bench/load.py --requests $(LOAD_REQUESTS) \
	  --v1-requests $(LOAD_V1_REQUESTS) --in-flight $(LOAD_IN_FLIGHT)

# Coverage-guided fuzzing with libFuzzer (clang), one target at a time; the
# library as CMakeLists.txt describes it, instrumented (HUSH_SANITIZE=fuzzer).
FUZZ_TARGETS := json envelope_v1 base64 attest mlkem_decaps xwing_decaps hpke_open hpke_keyfile \
                keyconfig_v2 frames_v2 enroll
fuzz-build: deps
	@command -v clang-14 >/dev/null || $(SUDO) apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null
	cmake -S . -B $(BUILD_FUZZ) -DCMAKE_C_COMPILER=clang-14 -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DHUSH_SANITIZE=fuzzer -DHUSH_BUILD_TESTS=OFF -DHUSH_WITH_LUA=OFF \
	  >/dev/null
	cmake --build $(BUILD_FUZZ) -j$(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))

fuzz: fuzz-build
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD_FUZZ)/corpus_$$t; \
	  TSS2_LOG=all+none ./$(BUILD_FUZZ)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) $(BUILD_FUZZ)/corpus_$$t \
	    tests/fuzz/corpus/$$t || exit 1; \
	done

# Fuzzing at length: every target for FUZZ_LONG_SECONDS (default 10 minutes)
# each, a line of figures per target, then the inputs that added coverage
# merged into the committed seed corpora (libFuzzer's -merge=1), which every
# test run replays. Commit tests/fuzz/corpus afterwards.
FUZZ_LONG_SECONDS ?= 600
fuzz-long: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  log=$(BUILD_FUZZ)/fuzz-long-$$t.log; mkdir -p $(BUILD_FUZZ)/corpus_$$t; \
	  TSS2_LOG=all+none ./$(BUILD_FUZZ)/fuzz_$$t -max_total_time=$(FUZZ_LONG_SECONDS) \
	    -print_final_stats=1 $(BUILD_FUZZ)/corpus_$$t tests/fuzz/corpus/$$t >$$log 2>&1 || \
	    { tail -n 60 $$log; echo "fuzz-long: $$t FAILED (log: $$log)"; exit 1; }; \
	  before=$$(ls tests/fuzz/corpus/$$t | wc -l); \
	  TSS2_LOG=all+none ./$(BUILD_FUZZ)/fuzz_$$t -merge=1 tests/fuzz/corpus/$$t \
	    $(BUILD_FUZZ)/corpus_$$t >>$$log 2>&1 || { tail -n 20 $$log; exit 1; }; \
	  echo "fuzz-long: $$t $$(grep -m1 '^stat::number_of_executed_units' $$log | cut -d: -f4 | tr -d ' ') runs in $(FUZZ_LONG_SECONDS) s," \
	    "corpus $$before -> $$(ls tests/fuzz/corpus/$$t | wc -l) entries"; \
	done

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_TSAN) $(BUILD_FUZZ) $(BUILD_CLIENT_ONLY) $(BUILD_OPENSSL35) $(BUILD_PYTHON) \
	  python/hushcall/_core*.so
