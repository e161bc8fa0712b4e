#!/usr/bin/env bash
# CI's fuzz smoke run: builds every target, then fuzzes each for SMOKE_SECONDS (default 60)
# from the committed corpus, and fails on any crash, panic, leak, timeout or out-of-memory.
# New inputs go to a scratch directory, so the committed corpus stays as it is; a crashing
# input is copied to fuzz/artifacts/ and printed. Targets run SMOKE_JOBS at a time (default:
# one per core), so the run takes about build + SMOKE_SECONDS x targets / SMOKE_JOBS.
#
#   fuzz/smoke.sh                 # all targets
#   fuzz/smoke.sh event command   # some of them
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.1
SECONDS_EACH=${SMOKE_SECONDS:-60}
JOBS=${SMOKE_JOBS:-$(nproc)}
# libFuzzer's limits: one allocation over MALLOC_MB, or a process over RSS_MB, is a crash.
MALLOC_MB=${SMOKE_MALLOC_MB:-256}
RSS_MB=${SMOKE_RSS_MB:-2048}
# FUZZ_TARGET_DIR: build there rather than in fuzz/target (CI keeps it across checkouts).
target_dir=()
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then target_dir=(--target-dir "$FUZZ_TARGET_DIR"); fi

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "smoke: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
# -O: release without debug assertions, the build the campaign in README.md measured.
cargo +nightly fuzz build -O "${target_dir[@]}"
# cargo fuzz has no --locked: fail if the build rewrote the committed lock file instead.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1 && ! git diff --quiet -- Cargo.lock; then
    echo "smoke: the build changed fuzz/Cargo.lock; commit the lock file it needs" >&2
    exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p artifacts

run_one() { # run_one TARGET: fuzzes it, prints one summary line, fails on a crash
    local t=$1 log="$scratch/$1.log"
    mkdir -p "$scratch/$t" "$scratch/$t.artifacts" "corpus/$t"
    if cargo +nightly fuzz run -O $TARGET_DIR_ARGS "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -malloc_limit_mb="$MALLOC_MB" -rss_limit_mb="$RSS_MB" \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$scratch/$t.artifacts/" \
        >"$log" 2>&1; then
        echo "smoke: $t ok, $(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$') executions"
    else
        echo "smoke: $t FAILED; its log ends:"
        tail -n 40 "$log"
        cp "$scratch/$t.artifacts/"* artifacts/ 2>/dev/null || true
        ls "$scratch/$t.artifacts/"
        return 1
    fi
}
export -f run_one
TARGET_DIR_ARGS=${FUZZ_TARGET_DIR:+--target-dir $FUZZ_TARGET_DIR}
export scratch SECONDS_EACH MALLOC_MB RSS_MB TARGET_DIR_ARGS

printf '%s\n' "${targets[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'
