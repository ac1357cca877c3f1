#!/usr/bin/env bash
# Runs every test of the workspace against the images `make images` built: shellcheck over
# the scripts, unit tests, each binary started as a process, container tests of the
# project's own images, and the fuzz targets for 20 s each.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Every shell script the project runs, before anything else: a finding fails the test command.
step "shellcheck"
shellcheck -x scripts/*.sh bench/*.sh docker/*/*.sh webapp/fingerprint.sh .ci/run
# Release, so the test build reuses the dependencies compiled for the images.
step "cargo test --release --workspace"
cargo test --release --workspace --locked --no-fail-fast
# The fuzz targets, briefly: proves they build and run; `make fuzz` runs them longer.
bash scripts/fuzz.sh
step "all tests passed"
