#!/usr/bin/env bash
# Soak run of docs/reliability.md: 20 cycles of up/down of 1000 slots through the library
# (tests/soak.rs, ignored by default), with per-cycle figures on stderr. Needs root; runs
# in a private network namespace and leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p netslot-kernel-tests --test soak -- --ignored --nocapture 2>&1 | tee "${1:-/dev/null}"
