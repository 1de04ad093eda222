#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 20).
# CI runs it through `make fuzz`; run it longer by hand: FUZZ_SECONDS=600 make fuzz.
#
# cargo-fuzz needs nightly-only compiler flags (sanitizer coverage); this machine has
# only the stable toolchain, so the script sets RUSTC_BOOTSTRAP=1 for the fuzz build
# alone (the library itself never needs it). The fuzz build directory is kept outside
# the checkout (FUZZ_TARGET_DIR) so clean clones reuse it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/eslab/fuzz-target}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once, about 6 minutes)…" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    echo "fuzzing $target for ${seconds}s" >&2
    # A crash makes libFuzzer exit non-zero and leaves the input under fuzz/artifacts/.
    cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
        | grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|thread .* panicked)' || true
    test "${PIPESTATUS[0]}" -eq 0
done
