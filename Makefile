# Two commands matter: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
SWIFT ?= swift
RELEASE_FLAGS := -c release

.PHONY: run test test-asan soak build release deps clean check-config bench bench-quick

## Install libuv's headers when missing (Debian/Ubuntu), as root or through sudo.
deps:
	@if ! pkg-config --exists libuv 2>/dev/null || [ ! -f /usr/include/uv.h ]; then \
		echo "installing libuv1-dev and pkg-config…"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libuv1-dev pkg-config >/dev/null; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build $(RELEASE_FLAGS)

## Build release, start two test backends on 3001/3002 and the proxy on 8080 with config.json.
## Ctrl-C stops all three.
run: release
	@Scripts/run-demo.sh "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" config.json

## Build everything and run every test (unit and integration).
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

## The whole suite with AddressSanitizer in the proxy, the test backend and the tests.
test-asan: deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/lsan.supp $(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan

## Benchmark this proxy against nginx and HAProxy in front of one nginx origin (6–7 minutes;
## installs wrk, nginx-light, haproxy, valgrind, strace and gnuplot-nox when missing). Prints a
## Markdown table and the targets; JSON and a PNG chart go to Benchmarks/results/.
## BENCH_ARGS passes options to Benchmarks/bench.py (see --help), e.g. BENCH_ARGS="--rounds 3 --duration 3".
bench: release
	python3 Benchmarks/bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" $(BENCH_ARGS)

## About a minute: one round of figures 1 (c64 requests/s, latency, CPU) and 7 (system calls).
bench-quick: release
	python3 Benchmarks/bench.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" --quick $(BENCH_ARGS)

check-config: release
	@$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)/proxy --config config.json --check

clean:
	rm -rf .build .build-asan

## Mixed traffic for MINUTES minutes (default 10); prints RSS and open fds each minute. Not in CI.
MINUTES ?= 10
soak: release
	python3 Benchmarks/soak.py --bin "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)" --minutes $(MINUTES)
