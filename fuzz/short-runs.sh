#!/usr/bin/env bash
# Every fuzz target for a short time (CI runs this): first the inputs that once crashed it
# (fuzz/regressions/<target>/) and its seeds, then new inputs for SECONDS seconds.
# Exits non-zero if any target crashes, hangs or leaks. Needs cargo-fuzz and a nightly
# toolchain; without them it says so and exits 0 (CI does not fail for a missing tool).
#
#   fuzz/short-runs.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true

if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: skipped, cargo-fuzz or the nightly toolchain is missing (rustup toolchain install nightly; cargo install cargo-fuzz)"
    exit 0
fi

# -a: debug assertions and overflow checks, as in a debug build; -O: optimised.
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
    cargo +nightly fuzz build -O -a
else
    for t in "${targets[@]}"; do
        cargo +nightly fuzz build -O -a "$t"
    done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    dirs=("$work/$t")
    mkdir -p "$work/$t"
    [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
    [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
    # The capture reader's seeds are the project's own sample captures.
    if [ "$t" = capture_raw ]; then
        for d in captures/samples tests/fixtures; do
            [ -d "$d" ] && dirs+=("$d")
        done
    fi
    log="$work/$t.log"
    mkdir -p "fuzz/artifacts/$t"
    if cargo +nightly fuzz run -O -a "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $t: ${runs:-?} inputs in ${seconds} s, no crash"
    else
        echo "fuzz $t: FAILED"
        grep -E -A3 "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -n 30
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (reproduce: cargo +nightly fuzz run -O -a TARGET FILE)"
    exit 1
fi
