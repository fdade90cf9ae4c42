# Petrel — the two commands of the README:
#   make run    installs what is missing, builds, starts a single-node broker on 127.0.0.1:8082 (data in ./data)
#   make test   installs what is missing, builds, runs the whole test suite (Swift tests, then process tests)
SHELL := /bin/bash
APT_PACKAGES := libmicrohttpd-dev nettle-dev libcurl4-openssl-dev pkg-config curl
# Only the tests need these: network namespaces and iptables cuts (Tests/process/test_cluster_netns.py).
TEST_APT_PACKAGES := iproute2 iptables
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3
ARGS ?=

.PHONY: deps build run test test-swift test-process bench sim clean

deps:
	@missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y $$missing; \
	fi
	@command -v $(PYTHON) >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3 python3-pip; }
	@$(PYTHON) -c 'import pytest, requests' 2>/dev/null || $(PYTHON) -m pip install -q -r Tests/process/requirements.txt

build: deps
	swift build -c release --product petrel

run: build
	.build/release/petrel serve $(ARGS)

test:
	$(MAKE) deps EXTRA_APT_PACKAGES="$(TEST_APT_PACKAGES)"
	swift build --build-tests
	$(MAKE) test-swift test-process

test-swift:
	swift test --skip-build

test-process:
	PETREL_BIN=$(CURDIR)/.build/debug/petrel $(PYTHON) -m pytest -q -p no:cacheprovider Tests/process

clean:
	rm -rf .build
