#!/usr/bin/env bash
# fuzz-smoke: runs each cargo-fuzz target of fuzz/ for a few seconds (default 20) from its
# committed seed corpus and fails on a crash. Skips (exit 0) when `cargo +nightly fuzz` is
# unavailable. The long runs and the targets' properties: docs/reliability.md, "Fuzzing".
#
#   FUZZ_SECONDS=20 scripts/fuzz-smoke.sh
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
CARGO=${CARGO:-cargo}

if ! "$CARGO" +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo +nightly fuzz is not available; skipping" \
         "(rustup toolchain install nightly && cargo install cargo-fuzz)"
    exit 0
fi

# libFuzzer adds what it finds to the corpus directory it is given: work on a copy so
# the committed seeds stay as they are.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# No sanitizer: the engine is safe Rust (unsafe only around syscalls, which the targets
# do not reach), and the properties are assertions, so ASan would only slow the run.
"$CARGO" +nightly fuzz build -s none >/dev/null

for target in $("$CARGO" +nightly fuzz list); do
    mkdir -p "$work/$target"
    cp fuzz/corpus/"$target"/* "$work/$target"/ 2>/dev/null || true
    echo "fuzz-smoke: $target for ${SECONDS_PER_TARGET}s"
    if ! "$CARGO" +nightly fuzz run -s none "$target" "$work/$target" -- \
            -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
            >"$work/$target.log" 2>&1; then
        tail -n 60 "$work/$target.log"
        echo "fuzz-smoke: $target FAILED; the input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done' "$work/$target.log" || true
done
echo "fuzz-smoke: no crash"
