#!/usr/bin/env bash
# The failover demo (docs/demo.md): checks that the stack is up with a writer and a
# replicating reader, builds foobar-demo, runs it. Runs any number of times in a row.
# Extra arguments go to foobar-demo: make demo DEMO_ARGS="--hold 5"; foobar-demo --help.
#
#   demo.sh           against the compose stack (make up)
#   demo.sh --swarm   against the stack `foobar` on Docker Swarm (make swarm-up,
#                     docs/swarm.md): a task of each service killed, the engine repairs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STACK=foobar
swarm=false
if [ "${1:-}" = --swarm ]; then
  swarm=true
  shift
fi

# router-a's view of the database pair, as JSON (empty when it cannot be asked).
topology() {
  local router
  if $swarm; then
    router=$(docker ps --quiet --filter "label=com.docker.swarm.service.name=${STACK}_router-a" | head -n1)
    [ -n "$router" ] || return 0
    docker exec "$router" foobar-db-router topology --config /etc/foobar/db-router.toml 2>/dev/null || true
  else
    docker compose exec -T router-a foobar-db-router topology --config /etc/foobar/db-router.toml 2>/dev/null || true
  fi
}

if $swarm; then
  if [ -z "$(docker service ls --quiet --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null)" ]; then
    echo "the stack $STACK is not deployed on a swarm: run make swarm-up first" >&2
    exit 2
  fi
  ca=tls/swarm-ca.pem
  svg=dist/swarm-demo-timeline.svg
  # Where visitors reach the edge nodes (scripts/swarm.sh: by default this node's address on
  # docker_gwbridge), foobar-dns and the balancer published on each.
  gateway=$(docker network inspect docker_gwbridge --format '{{(index .IPAM.Config 0).Gateway}}')
  dns=""
  for address in ${FOOBAR_SWARM_EDGE_ADDRESSES:-$gateway}; do
    dns="${dns:+$dns,}$address:${FOOBAR_SWARM_DNS_PORT:-53}"
  done
  port=${FOOBAR_SWARM_HTTPS_PORT:-443}
  target=(--swarm "$STACK")
  start="make swarm-up"
  what="a task of each service killed under load, the engine repairs (minutes)"
else
  if [ -z "$(docker compose ps --quiet 2>/dev/null)" ]; then
    echo "the stack is not running: run make up first" >&2
    exit 2
  fi
  ca=tls/ca.pem
  svg=dist/demo-timeline.svg
  dns="127.0.0.1:${DNS_PORT:-5353},127.0.0.1:${DNS2_PORT:-5354}"
  # The balancers' HTTPS port on the edge network, as their config says.
  port=$(sed -n '/^\[https\]/,/^\[/s/^listen *= *"[^"]*:\([0-9][0-9]*\)".*/\1/p' config/balancer.toml)
  port=${port:-443}
  target=()
  start="make up"
  what="faults on dns-1, dns-2, web-a, lb-1, router-a, db-replica, db-primary under load (minutes)"
fi
if [ ! -f "$ca" ]; then
  echo "$ca is missing: run $start first (it copies the balancers' CA there)" >&2
  exit 2
fi
# db-primary and db-replica are roles to the demo (the node router-a calls the writer, the
# reader, at the moment of each fault): after a failover they are the other way round, and
# the demo runs the same. It needs both, so that every fault has something to fail over to.
json=$(topology)
writer=$(jq -r '.writer // empty' <<<"$json" 2>/dev/null || true)
reader=$(jq -r '.reader // empty' <<<"$json" 2>/dev/null || true)
if [ -z "$writer" ] || [ -z "$reader" ] || [ "$writer" = "$reader" ]; then
  echo "router-a sees writer=${writer:-none}, reader=${reader:-none}: the demo needs a writer and a" >&2
  echo "replicating reader. Wait for them: a restarted old primary is fenced, then rejoined as the" >&2
  echo "replica by itself within seconds; watch it with" >&2
  echo "  foobar-db-router topology --config /etc/foobar/db-router.toml   (in router-a's container)" >&2
  echo "A node shown with \"errant\" transactions must be rebuilt first (docs/failover.md: Rebuilding a node)." >&2
  exit 2
fi

step "building foobar-demo"
cargo build --release --quiet -p foobar-demo
step "failover demo: $what"
# shellcheck disable=SC2086 # DEMO_ARGS is a list of arguments
exec "${CARGO_TARGET_DIR:-target}"/release/foobar-demo "${target[@]}" --dns "$dns" --port "$port" \
  --ca "$ca" --svg "$svg" ${DEMO_ARGS:-} "$@"
