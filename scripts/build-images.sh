#!/usr/bin/env bash
# Builds every image of the stack from a clean clone, on a machine with or without a registry.
#
# 1. Tools: the Compose v2 plugin and debootstrap, if missing (scripts/install-tools.sh).
# 2. Base images: debian:bookworm-slim, pulled or else built from Debian's packages
#    (scripts/base-images.sh).
# 3. The Rust binaries, by FOOBAR_BINARIES:
#      prebuilt  cargo on this host builds them once (the tests reuse the same build) and the
#                Dockerfile copies them from dist/bin/;
#      compiled  the Dockerfile builds them inside the official Rust image;
#      auto      (the default) prebuilt when this host has cargo and a glibc no newer than the
#                runtime image's (bookworm's 2.36), compiled otherwise.
# 4. docker compose build: one image per service, named foobar/<service>:dev, and the
#    `tools` profile's client image (started only by `docker compose run client`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

RUNTIME_GLIBC=2.36

bash scripts/install-tools.sh
bash scripts/base-images.sh debian:bookworm-slim

host_glibc_fits() {
  local host
  host=$(ldd --version 2>/dev/null | head -n1 | awk '{print $NF}')
  [ -n "$host" ] && [ "$(printf '%s\n%s\n' "$host" "$RUNTIME_GLIBC" | sort -V | tail -n1)" = "$RUNTIME_GLIBC" ]
}

binaries=${FOOBAR_BINARIES:-auto}
if [ "$binaries" = auto ]; then
  if command -v cargo >/dev/null 2>&1 && host_glibc_fits; then binaries=prebuilt; else binaries=compiled; fi
fi
case "$binaries" in
  prebuilt)
    step "cargo build --release (binaries for the images; the tests reuse this build)"
    cargo build --release --locked --bins
    mkdir -p dist/bin
    release="${CARGO_TARGET_DIR:-target}/release"
    cp "$release/foobar-dns" "$release/foobar-balancer" "$release/foobar-webapp" \
       "$release/foobar-db-router" dist/bin/
    ;;
  compiled) step "binaries will be compiled inside the Rust image" ;;
  *) echo "FOOBAR_BINARIES must be auto, prebuilt or compiled, not '$binaries'" >&2; exit 2 ;;
esac

step "docker compose build (binaries: $binaries; full log in dist/build.log)"
mkdir -p dist
# One line per build step that does work; the whole log is kept for when something fails.
if ! FOOBAR_BINARIES=$binaries docker compose --profile tools --progress plain build 2>&1 | tee dist/build.log \
     | awk '/^#[0-9]+ \[[^]]* [0-9]+\/[0-9]+\]/ && !seen[$0]++ { print "    " $0; fflush() }'; then
  tail -n 40 dist/build.log >&2
  echo "docker compose build failed (whole log: dist/build.log)" >&2
  exit 1
fi
step "images:"
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^foobar/' | sed 's/^/    /' >&2
