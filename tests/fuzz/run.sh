#!/usr/bin/env bash
# Runs a cargo-fuzz target of corecached for a bounded time, starting from the committed seeds.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET]      (defaults: 30 s, decode_binary)
#
# New inputs go to tests/fuzz/corpus/TARGET (git-ignored), crashes to tests/fuzz/artifacts.
# An allocation over 64 MiB or an RSS over 1 GiB fails the run, so unbounded allocation is a
# finding, not a slow run. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 allows them on
# the stable toolchain.
set -euo pipefail

secs="${1:-${FUZZ_SECONDS:-30}}"
target="${2:-${FUZZ_TARGET:-decode_binary}}"
cd "$(dirname "$0")/../.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

corpus="tests/fuzz/corpus/$target"
mkdir -p "$corpus"
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz "$target" \
    "$corpus" "tests/fuzz/seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=1024 -malloc_limit_mb=64 -max_len=4096 \
    -print_final_stats=1
