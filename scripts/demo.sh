#!/usr/bin/env bash
# The failover demo (issue 7): checks that the stack is up, builds foobar-demo, runs it.
# Extra arguments go to foobar-demo: make demo DEMO_ARGS="--hold 5"; foobar-demo --help.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -z "$(docker compose ps --quiet 2>/dev/null)" ]; then
  echo "the stack is not running: run make up first" >&2
  exit 2
fi
if [ ! -f tls/ca.pem ]; then
  echo "tls/ca.pem is missing: run make up first (it copies the balancers' CA there)" >&2
  exit 2
fi
# The demo kills db-replica as the replica and db-primary as the primary. An earlier run's
# db-primary kill (or any failover) leaves db-replica writing and db-primary fenced, and the
# data volumes keep that across make down/up: the kills would then mean something else.
topology=$(docker compose exec -T router-a foobar-db-router topology --config /etc/foobar/db-router.toml 2>/dev/null || true)
writer=$(printf '%s\n' "$topology" | sed -n 's/^  "writer": "\([^"]*\)".*/\1/p')
reader=$(printf '%s\n' "$topology" | sed -n 's/^  "reader": "\([^"]*\)".*/\1/p')
if [ "$writer" != "db-primary:3306" ] || [ "$reader" != "db-replica:3306" ]; then
  echo "the demo needs db-primary writing and db-replica replicating; router-a sees writer=${writer:-none}," >&2
  echo "reader=${reader:-none} (an earlier failover, kept in the data volumes). Start from fresh data:" >&2
  echo "  make clean && make up        (deletes the stack's databases)" >&2
  exit 2
fi

# The balancers' HTTPS port on the edge network, as their config says.
port=$(sed -n '/^\[https\]/,/^\[/s/^listen *= *"[^"]*:\([0-9][0-9]*\)".*/\1/p' config/balancer.toml)
step "building foobar-demo"
cargo build --release --quiet -p foobar-demo
step "failover demo: kills dns-1, dns-2, web-a, lb-1, router-a, db-replica, db-primary under load (a few minutes)"
# shellcheck disable=SC2086 # DEMO_ARGS is a list of arguments
exec target/release/foobar-demo --dns "127.0.0.1:${DNS_PORT:-5353},127.0.0.1:${DNS2_PORT:-5354}" --port "${port:-443}" \
  --ca tls/ca.pem --svg dist/demo-timeline.svg ${DEMO_ARGS:-} "$@"
