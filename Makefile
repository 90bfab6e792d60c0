# Two commands matter: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
SWIFT ?= swift
## Release builds link the Swift runtime statically: one self-contained `proxy` binary to copy
## anywhere, and calls into the runtime (retain/release on every request) skip the PLT — measured
## 0.96× CPU per request and 8.5 MB instead of 11.2 MB RSS at start (docs/performance.md).
RELEASE_FLAGS := -c release --static-swift-stdlib

.PHONY: run test test-deps test-asan test-tsan soak build release install uninstall deps clean check-config bench bench-quick bench-tls bench-h2 bench-balance bench-policy bench-static bench-compress h2spec

## Where `make install` puts `proxy` (PREFIX/bin); DESTDIR for packaging.
PREFIX ?= /usr/local

## Install libuv's, OpenSSL's, nghttp2's, c-ares's, hiredis's, zlib's and brotli's headers (and the openssl tool the TLS
## tests make certificates with) when missing (Debian/Ubuntu), as root or through sudo.
deps:
	@if ! pkg-config --exists libuv openssl libnghttp2 libcares hiredis libcrypt zlib libbrotlienc 2>/dev/null || [ ! -f /usr/include/uv.h ] || ! command -v openssl >/dev/null 2>&1; then \
		echo "installing libuv1-dev, libssl-dev, libnghttp2-dev, libc-ares-dev, libhiredis-dev, zlib1g-dev, libbrotli-dev, openssl and pkg-config…"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libuv1-dev libssl-dev libnghttp2-dev libc-ares-dev libhiredis-dev libcrypt-dev zlib1g-dev libbrotli-dev openssl pkg-config >/dev/null; \
	fi

## What the tests need beyond the toolchain: Debian's chromium (the status page's browser test)
## and wrk (the many-connections tests), curl and certutil (HTTPS tests), nghttp and h2load
## (HTTP/2 tests), redis-server (global rate limits), htpasswd (basic auth), installed when missing. (Python packages go into
## .build/pyenv from PyPI when a test needs them.)
test-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 || ! command -v certutil >/dev/null 2>&1 || ! command -v h2load >/dev/null 2>&1 || [ ! -x /usr/bin/redis-server ] || ! command -v htpasswd >/dev/null 2>&1; then \
		echo "installing chromium, wrk, curl, libnss3-tools, nghttp2-client, redis-server and apache2-utils for the tests…"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium wrk curl libnss3-tools nghttp2-client redis-server apache2-utils >/dev/null; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build $(RELEASE_FLAGS)

## Build release and copy the self-contained `proxy` binary to $(DESTDIR)$(PREFIX)/bin (e.g.
## `make install PREFIX=$HOME/.local` without root; run it as the user who builds, then
## `sudo install` the binary if the prefix needs root, so .build/ is not left owned by root).
## `proxy --version` then says what it is.
install: release
	install -d "$(DESTDIR)$(PREFIX)/bin"
	install -m 0755 "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)/proxy" "$(DESTDIR)$(PREFIX)/bin/proxy"
	@echo "installed $(DESTDIR)$(PREFIX)/bin/proxy: $$("$(DESTDIR)$(PREFIX)/bin/proxy" --version)"

uninstall:
	rm -f "$(DESTDIR)$(PREFIX)/bin/proxy"

## Build release, start two test backends on 3001/3002 and the proxy on 8080 with config.json.
## Ctrl-C stops all three.
run: release
	@Scripts/run-demo.sh "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" config.json

## Check the layering rule first (Scripts/check-layering.sh: only Sources/Proxy/Loop/ imports the
## C modules, and HTTP/ uses nothing from Loop/ or Config/; under a second), then build everything
## and run every test (unit and integration), then replay the fuzz corpus through the fuzz
## targets' checks (the normal build of them; about a second).
test: deps test-deps
	@Scripts/check-layering.sh
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	@SWIFT=$(SWIFT) Scripts/fuzz.sh replay "$$($(SWIFT) build --show-bin-path)"

## The whole suite with AddressSanitizer in the proxy, the test backend and the tests.
test-asan: deps test-deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/lsan.supp $(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan

## The whole suite with ThreadSanitizer in the proxy (two worker loops in every integration
## test), the test backend and the tests. Any data race report fails the run (halt_on_error).
test-tsan: deps test-deps
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$(CURDIR)/Tests/tsan.supp" $(SWIFT) test --skip-build --sanitize=thread --scratch-path .build-tsan

## Benchmark this proxy against nginx and HAProxy in front of one nginx origin (6–7 minutes;
## installs wrk, nginx-light, haproxy, valgrind, strace and gnuplot-nox when missing). Prints a
## Markdown table and the targets; JSON and a PNG chart go to Benchmarks/results/.
## BENCH_ARGS passes options to Benchmarks/bench.py (see --help), e.g. BENCH_ARGS="--rounds 3 --duration 3".
bench: release
	python3 Benchmarks/bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(BENCH_ARGS)
	python3 Benchmarks/tls_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(TLS_BENCH_ARGS)
	python3 Benchmarks/h2_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(H2_BENCH_ARGS)
	python3 Benchmarks/balance_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(BALANCE_BENCH_ARGS)
	python3 Benchmarks/policy_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(POLICY_BENCH_ARGS)
	python3 Benchmarks/static_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(STATIC_BENCH_ARGS)
	python3 Benchmarks/compress_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(COMPRESS_BENCH_ARGS)

## The compression section of `make bench` alone (about 3 minutes; installs wrk and nginx-light when
## missing): gzip and brotli responses of a 100 KiB JSON and a 1 MiB JavaScript file, one worker
## each: requests/s, MB/s and CPU per uncompressed MB against nginx's gzip at the same level
## (target: ≤ 1.25×), and the compressed sizes. COMPRESS_BENCH_ARGS="--level 6 --rounds 1".
bench-compress: release
	python3 Benchmarks/compress_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(COMPRESS_BENCH_ARGS)

## The static files section of `make bench` alone (about 3 minutes; installs wrk, nginx-light and
## caddy when missing): a 1 KiB file's requests/s, p99 and CPU per request, and a 1 GiB file's MB/s,
## against nginx and Caddy's file_server, one worker each.
bench-static: release
	python3 Benchmarks/static_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(STATIC_BENCH_ARGS)

## The policy section of `make bench` alone (about 2 minutes; installs wrk and redis-server when
## missing): CPU per request and p99 at c64 with no policy, a proxy-scope and a global (Redis) rate
## limit that never trigger, and a global limit's accuracy across two instances.
bench-policy: release
	python3 Benchmarks/policy_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(POLICY_BENCH_ARGS)

## The balancing section of `make bench` alone (about 4½ minutes; installs nghttp2-client, wrk,
## nginx-light and haproxy when missing): three uneven backends (1 ms, 2 ms, 1 ms with 5 % at
## 50 ms) through each policy, nginx least_conn and HAProxy leastconn; p50/p99/p99.9, req/s and
## each backend's share. BALANCE_BENCH_ARGS="--rounds 1 --duration 5" for a quick look.
bench-balance: release
	python3 Benchmarks/balance_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(BALANCE_BENCH_ARGS)

## The HTTP/2 section of `make bench` alone (about 4 minutes; installs nghttp2-client,
## nghttp2-proxy and h2o when missing): h2load against this proxy, nginx, HAProxy, h2o and nghttpx,
## over TLS and h2c, at 10 and 100 streams per connection.
bench-h2: release
	python3 Benchmarks/h2_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(H2_BENCH_ARGS)

## HTTP/2 conformance: h2spec (146 cases) against the proxy over TLS and over h2c. Needs an h2spec
## binary (H2SPEC=path), or its source (H2SPEC_SRC=a checkout of summerwind/h2spec) to build
## offline with Debian's Go packages (installed when missing).
H2SPEC ?=
H2SPEC_SRC ?=
h2spec: release
	@Scripts/h2spec.sh "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" "$(H2SPEC)" "$(H2SPEC_SRC)"

## The TLS section of `make bench` alone (about 3 minutes; installs nghttp2-client, h2o and caddy
## when missing): this proxy against nginx, HAProxy, h2o and Caddy terminating TLS.
bench-tls: release
	python3 Benchmarks/tls_bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(TLS_BENCH_ARGS)

## About a minute: one round of figures 1 (c64 requests/s, latency, CPU) and 7 (system calls).
bench-quick: release
	python3 Benchmarks/bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" --quick $(BENCH_ARGS)

check-config: release
	@$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)/proxy --config config.json --check

## libFuzzer on the request parser, the response parser and the chunked decoder (Fuzz/README.md):
## builds them with -sanitize=fuzzer,address in .build-fuzz and runs each for SECONDS (default 60)
## on a working corpus in .build-fuzz/corpus seeded from Fuzz/corpus. Fails on a crash or a broken
## invariant; the input lands in Fuzz/crashes/. FUZZ_CONFIG=debug builds faster and runs ~4x slower.
## `make clean` leaves .build-fuzz (and its grown corpus) alone: rm -rf .build-fuzz to start over.
SECONDS ?= 60
FUZZ_CONFIG ?= release
fuzz: deps
	@SWIFT=$(SWIFT) Scripts/fuzz.sh build $(FUZZ_CONFIG)
	@SWIFT=$(SWIFT) Scripts/fuzz.sh run $(FUZZ_CONFIG) $(SECONDS)

## Each fuzzer for 10 s (a debug build: quicker to build than release) — a CI smoke test.
fuzz-smoke: deps
	@SWIFT=$(SWIFT) Scripts/fuzz.sh build debug
	@SWIFT=$(SWIFT) Scripts/fuzz.sh run debug 10

fuzz-build: deps
	@SWIFT=$(SWIFT) Scripts/fuzz.sh build $(FUZZ_CONFIG)

## Replay the committed corpus through the normal build of the fuzz targets (part of `make test`).
fuzz-replay: deps
	$(SWIFT) build
	@SWIFT=$(SWIFT) Scripts/fuzz.sh replay "$$($(SWIFT) build --show-bin-path)"

clean:
	rm -rf .build .build-asan .build-tsan

## Mixed traffic for MINUTES minutes (default 10); prints RSS and open fds each minute. Not in CI.
MINUTES ?= 10
soak: release
	python3 Benchmarks/soak.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" --minutes $(MINUTES)
