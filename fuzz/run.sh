#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the other, and prints
# executions, speed, corpus growth and crashes per target.
#
# Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]      (default: 60 seconds, every target)
#        FUZZ_ONE_BUILD=1 fuzz/run.sh ...        (one build for every target, see below)
#
# The committed seed corpus (fuzz/corpus/<target>) is read, never written: new inputs go to
# fuzz/target/corpus-work/<target>, crashes to fuzz/artifacts/<target>, logs to
# fuzz/target/run-logs/<target>.log. To keep a crash as a regression input, minimise it
# (cargo +nightly fuzz tmin <target> <file>) and commit it under fuzz/corpus/<target>/.
#
# Inputs may be as long as each target's decoder reads, and one byte more: libFuzzer's own
# default caps them near the largest seed. The lengths are in fuzz/max_len.txt, derived from
# the crate's limits (MAX_TX_LEN, MAX_BLOCK_LEN, ...) by the seed writer and checked against them
# by `cargo test --test fuzz_corpus`.
set -euo pipefail
cd "$(dirname "$0")"

max_len() {
    local n
    n=$(awk -v t="$1" '$1 == t { print $2 }' max_len.txt)
    if [ -z "$n" ]; then
        echo "fuzz/max_len.txt has no length for target $1" >&2
        exit 2
    fi
    echo "$n"
}

secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for t in "${targets[@]}"; do max_len "$t" >/dev/null; done

# The decoders run under AddressSanitizer (the default). The chain-driving targets look for logic
# errors, not memory errors, in code that forbids `unsafe`: they run without a sanitizer, about
# three times faster, from a build directory of their own so that neither build evicts the other.
# With FUZZ_ONE_BUILD=1 (a short smoke run) every target runs from the one sanitized build,
# which saves the second build.
unsanitized() {
    [ -z "${FUZZ_ONE_BUILD:-}" ] || return 1
    case "$1" in chain_model | access_op) return 0 ;; *) return 1 ;; esac
}
nosan=(-s none --target-dir target/nosan)

cargo +nightly fuzz build
for t in "${targets[@]}"; do
    if unsanitized "$t"; then cargo +nightly fuzz build "${nosan[@]}" "$t"; fi
done

mkdir -p target/run-logs
summary="target/run-summary.txt"
printf '%-18s %10s %12s %9s %8s %8s %s\n' target max_len executions "exec/s" corpus crashes status | tee "$summary"
failed=0
for t in "${targets[@]}"; do
    work="target/corpus-work/$t"
    log="target/run-logs/$t.log"
    mkdir -p "$work" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    set +e
    flags=()
    if unsanitized "$t"; then flags=("${nosan[@]}"); fi
    len=$(max_len "$t")
    cargo +nightly fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" -- \
        -max_len="$len" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=512 -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    speed=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    corpus=$(find "$work" -type f | wc -l)
    crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
    [ "$status" -eq 0 ] || failed=1
    printf '%-18s %10s %12s %9s %8s %8s %s\n' "$t" "$len" "${execs:-?}" "${speed:-?}" "$corpus" "$crashes" \
        "$([ "$status" -eq 0 ] && echo ok || echo "FAILED (see $log)")" | tee -a "$summary"
done
exit "$failed"
