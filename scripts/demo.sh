#!/usr/bin/env bash
# The failover demo (docs/demo.md): checks that the stack is up with a writer and a
# replicating reader, builds foobar-demo, runs it. Runs any number of times in a row.
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
# db-primary and db-replica are roles to the demo (the node router-a calls the writer, the
# reader, at the moment of each fault): after a failover they are the other way round, and
# the demo runs the same. It needs both, so that every fault has something to fail over to.
topology=$(docker compose exec -T router-a foobar-db-router topology --config /etc/foobar/db-router.toml 2>/dev/null || true)
writer=$(jq -r '.writer // empty' <<<"$topology" 2>/dev/null || true)
reader=$(jq -r '.reader // empty' <<<"$topology" 2>/dev/null || true)
if [ -z "$writer" ] || [ -z "$reader" ] || [ "$writer" = "$reader" ]; then
  echo "router-a sees writer=${writer:-none}, reader=${reader:-none}: the demo needs a writer and a" >&2
  echo "replicating reader. Wait for them: a restarted old primary is fenced, then rejoined as the" >&2
  echo "replica by itself within seconds; watch it with" >&2
  echo "  docker compose exec router-a foobar-db-router topology --config /etc/foobar/db-router.toml" >&2
  echo "A node shown with \"errant\" transactions must be rebuilt first (docs/failover.md: Rebuilding a node)." >&2
  exit 2
fi

# The balancers' HTTPS port on the edge network, as their config says.
port=$(sed -n '/^\[https\]/,/^\[/s/^listen *= *"[^"]*:\([0-9][0-9]*\)".*/\1/p' config/balancer.toml)
step "building foobar-demo"
cargo build --release --quiet -p foobar-demo
step "failover demo: faults on dns-1, dns-2, web-a, lb-1, router-a, db-replica, db-primary under load (minutes)"
# shellcheck disable=SC2086 # DEMO_ARGS is a list of arguments
exec "${CARGO_TARGET_DIR:-target}"/release/foobar-demo --dns "127.0.0.1:${DNS_PORT:-5353},127.0.0.1:${DNS2_PORT:-5354}" --port "${port:-443}" \
  --ca tls/ca.pem --svg dist/demo-timeline.svg ${DEMO_ARGS:-} "$@"
