#!/usr/bin/env bash
# Runs every test of the workspace against the images `make images` built: unit tests,
# each binary started as a process, and container tests of the project's own images.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Release, so the test build reuses the dependencies compiled for the images.
step "cargo test --release --workspace"
cargo test --release --workspace --locked --no-fail-fast
step "all tests passed"
