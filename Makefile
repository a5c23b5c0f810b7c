# netslot: the two commands a new user needs are `make demo` and `make test` (as root).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
SLOTS ?= 1000
# Where cargo puts binaries (honours CARGO_TARGET_DIR like cargo does).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

# `make install`: where things go (see scripts/install.sh for the finer variables).
PREFIX ?= /usr/local
DESTDIR ?=
CNI_BIN_DIR ?= /opt/cni/bin

.PHONY: deps build demo test lint fuzz bench clean install uninstall

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --release -p netslot-cli

## Provisions $(SLOTS) standard slots in a private network and mount namespace, prints the
## report and a sample slot, then tears everything down. Touches nothing outside.
demo: build
	@mkdir -p /run/netns
	unshare --net --mount --propagation private bash -euc '\
	  mount -t tmpfs netslot-demo /run/netns; \
	  N=$(TARGET_DIR)/release/netslot; \
	  $$N up --slots $(SLOTS); \
	  echo; $$N status | head -4; echo "  ..."; \
	  echo; echo "inside slot ns0 (ip netns exec ns0 ...):"; \
	  ip netns exec ns0 ip -br addr; ip netns exec ns0 ip route; \
	  echo; $$N down'

## Every test: unit tests, kernel integration tests (root), RTNL counter validation, the
## Kubernetes manifests (schemas and invariants), then a 20 s smoke run of each fuzz target
## (skipped without cargo +nightly fuzz).
test: deps
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast
	scripts/check-k8s-manifests.sh
	CARGO=$(CARGO) scripts/fuzz-smoke.sh

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The long fuzz runs of docs/reliability.md ("Fuzzing"), FUZZ_RUNS executions per target.
## The working corpus grows in fuzz/corpus-run/ (ignored); fuzz/corpus/ keeps the seeds.
FUZZ_RUNS ?= 10000000
fuzz:
	for t in $$($(CARGO) +nightly fuzz list); do \
	  mkdir -p fuzz/corpus-run/$$t && cp -n fuzz/corpus/$$t/* fuzz/corpus-run/$$t/ && \
	  $(CARGO) +nightly fuzz run -s none $$t fuzz/corpus-run/$$t -- \
	    -runs=$(FUZZ_RUNS) -print_final_stats=1 || exit 1; \
	done

## The benchmark campaign of docs/benchmarks.md (about an hour on 2 vCPUs).
BENCH_OUT ?= bench-results
bench: deps
	$(CARGO) build --release -p netslot-bench
	$(TARGET_DIR)/release/netslot-bench --n 100,1000,4000 --systems all --out $(BENCH_OUT)

## Installs the release build: netslot in $(PREFIX)/bin, netslot-cni in $(CNI_BIN_DIR), the
## systemd units (paths filled in) in $(PREFIX)/lib/systemd/system, shell completions, man
## pages and docs under $(PREFIX)/share. DESTDIR is prepended to every path (packaging).
install: build
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) CNI_BIN_DIR=$(CNI_BIN_DIR) \
	  BUILD_DIR=$(TARGET_DIR)/release scripts/install.sh install

## Removes what `make install` installed (same PREFIX, DESTDIR and CNI_BIN_DIR).
uninstall:
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) CNI_BIN_DIR=$(CNI_BIN_DIR) scripts/install.sh uninstall

clean:
	$(CARGO) clean
