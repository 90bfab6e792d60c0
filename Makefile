# Two commands matter: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
SWIFT ?= swift
RELEASE_FLAGS := -c release
BIN_RELEASE = $(shell $(SWIFT) build $(RELEASE_FLAGS) --show-bin-path 2>/dev/null)

.PHONY: run test test-asan build release deps clean check-config

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

check-config: release
	@$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)/proxy --config config.json --check

clean:
	rm -rf .build .build-asan
