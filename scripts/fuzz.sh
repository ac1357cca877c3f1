#!/usr/bin/env bash
# Runs every cargo-fuzz target of the project for SECONDS each (default 20; `make fuzz` runs
# longer). Installs cargo-fuzz when missing. On a stable toolchain cargo-fuzz runs without a
# sanitizer (`--sanitizer none`): the parsers fuzzed are safe Rust, so what it looks for is
# panics and broken invariants, which libFuzzer still finds with coverage guidance.
#
#   scripts/fuzz.sh            # 20 s per target
#   SECONDS_PER_TARGET=600 scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=${SECONDS_PER_TARGET:-20}
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION (once per machine)"
  cargo install --locked --quiet "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

sanitizer=address
if ! rustc --version | grep -q nightly; then sanitizer=none; fi

# Each fuzz folder: a crate beside the code it fuzzes, with seed inputs kept in git.
mkdir -p dist
for fuzz_dir in dns/fuzz db-router/fuzz balancer/fuzz; do
  for target in $(cargo fuzz list --fuzz-dir "$fuzz_dir"); do
    # libFuzzer adds what it finds to the first folder (scratch, in dist/) and only reads the
    # committed seeds in the second.
    scratch="dist/fuzz-corpus/$target"
    mkdir -p "$scratch"
    step "fuzzing $fuzz_dir $target for ${seconds}s (sanitizer: $sanitizer)"
    # libFuzzer prints a status line per new coverage; keep the last few and the verdict.
    # One target folder for every fuzz crate: they share most dependencies (foobar-service's),
    # built once with the fuzzer's instrumentation.
    if ! cargo fuzz run --fuzz-dir "$fuzz_dir" --target-dir target/fuzz --sanitizer "$sanitizer" \
        "$target" "$scratch" "$fuzz_dir/corpus/$target" \
        -- -max_total_time="$seconds" -print_final_stats=1 > "dist/fuzz-$target.log" 2>&1; then
      tail -n 60 "dist/fuzz-$target.log" >&2
      echo "fuzz target $target failed (whole log: dist/fuzz-$target.log)" >&2
      exit 1
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "dist/fuzz-$target.log" \
      | sed 's/^/    /' >&2 || true
  done
done
step "fuzzing found nothing"
