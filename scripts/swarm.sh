#!/usr/bin/env bash
# The stack on Docker Swarm (issue 18; docker/swarm/stack.yml, README: "Outgrowing one
# machine"). Run through make: swarm-up, swarm-deploy, swarm-down.
#
#   up      Inits a one-node swarm when this engine is in none (and remembers that it did),
#           labels this node when it is the swarm's only one, deploys the stack `foobar`, and
#           waits until every service has all its tasks running and healthy.
#   deploy  Rolls web, then the balancers, to the images their tags name now (make images
#           first): the engine replaces one task at a time, health-gated, and rolls a service
#           back by itself when a new task is not healthy.
#   down    Removes the stack (--volumes: its volumes too); leaves the swarm only if `up`
#           made it, and refuses to while a compose project runs on this engine: leaving a
#           swarm broke such a project's name lookups here (its containers had to be made
#           again, `docker compose down` then `up`).
#
# Variables: FOOBAR_SWARM_EDGE_ADDRESSES, the addresses of the nodes labelled foobar.edge=true
# that visitors reach (www.foobar.com's A records, ns1 and ns2); on one node by default the
# node's address on docker_gwbridge, which the host and every container reach.
# FOOBAR_SWARM_{HTTP,HTTPS,DNS}_PORT (80, 443, 53): the ports published on each edge node.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

STACK=foobar
STATE=.swarm                      # what `up` made, so `down` undoes only that (git-ignored)
SERVICES_IMAGES=(foobar/dns:dev foobar/balancer:dev foobar/webapp:dev foobar/db-router:dev
  foobar/mariadb:dev foobar/prometheus:dev)

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }

# The compose projects with running containers on this engine, one a line.
compose_projects() {
  docker ps --filter label=com.docker.compose.project \
    --format '{{.Label "com.docker.compose.project"}}' | sort -u
}

# The stack's services, "NAME RUNNING/WANTED" a line.
service_replicas() {
  docker service ls --filter "label=com.docker.stack.namespace=$STACK" \
    --format '{{.Name}} {{.Replicas}}'
}

# The services not yet at full strength: fewer running tasks than wanted, or a task of
# theirs not healthy yet (a task counts as running before its first health check passes).
not_ready() {
  local name replicas running wanted sick
  sick=$(docker ps --filter "label=com.docker.stack.namespace=$STACK" \
    --format '{{.Label "com.docker.swarm.service.name"}} {{.Status}}' |
    grep -v '(healthy)' | cut -d' ' -f1 | sort -u || true)
  while read -r name replicas; do
    [ -n "$name" ] || continue
    running=${replicas%%/*}
    wanted=${replicas#*/}
    wanted=${wanted%% *}
    if [ "$running" != "$wanted" ] || [ "$wanted" = 0 ] || grep -qxF "$name" <<<"$sick"; then
      echo "${name#"$STACK"_}($replicas)"
    fi
  done < <(service_replicas)
}

wait_ready() {
  local seconds=$1 started=$SECONDS waiting last=""
  while true; do
    waiting=$(not_ready | tr '\n' ' ')
    [ -n "$(service_replicas)" ] && [ -z "$waiting" ] && return 0
    if (( SECONDS - started > seconds )); then
      echo "swarm: not ready within ${seconds} s: $waiting" >&2
      docker stack ps "$STACK" --no-trunc --filter desired-state=running \
        --format '{{.Name}} {{.CurrentState}} {{.Error}}' >&2 || true
      return 1
    fi
    if [ "$waiting" != "$last" ] || (( (SECONDS - started) % 10 == 0 )); then
      step "waiting for: ${waiting:-the services to appear}"
      last=$waiting
    fi
    sleep 1
  done
}

# Every edge node's balancer has as many web backends UP as web has tasks (it finds them in
# tasks.web every pool.resolve_interval, then checks them).
web_in_balancers() {
  local address wanted up
  wanted=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_web")
  for address in $EDGE_ADDRESSES; do
    up=$(curl -fsS --max-time 2 "http://$address:9100/status.json" | tr '{' '\n' |
      grep '"name":"tasks.web:8080@' | grep -c '"state":"UP"') || return 1
    [ "$up" = "$wanted" ] || return 1
  done
}

wait_web_in_balancers() {
  local started=$SECONDS
  until web_in_balancers; do
    (( SECONDS - started < $1 )) || { echo "swarm: the balancers do not have every web task UP" >&2; return 1; }
    sleep 1
  done
}

# The zone for the swarm: config/zones/foobar.com.zone with the apex's and www's A records,
# ns1 and ns2 made the edge nodes' addresses (compose's fixed lb-1/lb-2 names dropped).
render_zone() {
  local out=$1 first second
  read -r -a addresses <<<"$2"
  first=${addresses[0]}
  second=${addresses[1]:-$first}
  awk -v list="${addresses[*]}" -v ns1="$first" -v ns2="$second" '
    NR == 1 { print "; Made by scripts/swarm.sh from config/zones/foobar.com.zone, with the edge nodes\x27 addresses."; print ";" }
    $1 == "lb-1" || $1 == "lb-2" { next }
    ($1 == "IN" || $1 == "www") && $(NF-1) == "A" && $NF ~ /^10\.153\.53\.1[12]$/ {
      if (!(($1) in done)) { n = split(list, a, " "); for (i = 1; i <= n; i++) printf "%-8sIN A    %s\n", ($1 == "IN" ? "" : $1), a[i] }
      done[$1] = 1; next
    }
    $1 == "ns1" { printf "ns1     IN A    %s\n", ns1; next }
    $1 == "ns2" { printf "ns2     IN A    %s\n", ns2; next }
    { print }' config/zones/foobar.com.zone >"$out"
}

up() {
  local image missing=() state gateway nodes
  for image in "${SERVICES_IMAGES[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "swarm: missing images ${missing[*]}: run make images" >&2
    exit 1
  fi
  mkdir -p "$STATE"
  state=$(swarm_state)
  case $state in
    inactive)
      docker network inspect docker_gwbridge >/dev/null 2>&1 || touch "$STATE/made-gwbridge"
      step "docker swarm init (a one-node swarm; make swarm-down leaves it again)"
      docker swarm init --advertise-addr "${FOOBAR_SWARM_ADVERTISE_ADDR:-127.0.0.1}" >/dev/null
      touch "$STATE/made-swarm"
      ;;
    active)
      [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
        { echo "swarm: this node is a worker: run make swarm-up on a manager" >&2; exit 1; }
      step "deploying to the active swarm"
      ;;
    *) echo "swarm: this engine's swarm is $state" >&2; exit 1 ;;
  esac
  # The bridge through which swarm tasks publish host ports and reach outside; Docker makes it
  # with the first task, made here first to know this node's address on it.
  if ! docker network inspect docker_gwbridge >/dev/null 2>&1; then
    docker network create --driver bridge \
      --opt com.docker.network.bridge.name=docker_gwbridge \
      --opt com.docker.network.bridge.enable_icc=false \
      --opt com.docker.network.bridge.enable_ip_masquerade=true docker_gwbridge >/dev/null
  fi
  gateway=$(docker network inspect docker_gwbridge --format '{{(index .IPAM.Config 0).Gateway}}')
  nodes=$(docker node ls --quiet | wc -l)
  if [ "$nodes" = 1 ]; then
    step "labelling this node foobar.edge, foobar.db-primary, foobar.db-replica"
    docker node update --label-add foobar.edge=true --label-add foobar.db-primary=true \
      --label-add foobar.db-replica=true "$(docker info --format '{{.Swarm.NodeID}}')" >/dev/null
  else
    for label in foobar.edge foobar.db-primary foobar.db-replica; do
      docker node ls --quiet | xargs docker node inspect \
        --format "{{index .Spec.Labels \"$label\"}}" | grep -qx true ||
        { echo "swarm: no node is labelled $label=true (README: Outgrowing one machine)" >&2; exit 1; }
    done
    [ -n "${FOOBAR_SWARM_EDGE_ADDRESSES:-}" ] ||
      { echo "swarm: $nodes nodes: set FOOBAR_SWARM_EDGE_ADDRESSES to the edge nodes' addresses" >&2; exit 1; }
  fi
  EDGE_ADDRESSES=${FOOBAR_SWARM_EDGE_ADDRESSES:-$gateway}
  FOOBAR_SWARM_ZONE=$PWD/$STATE/foobar.com.zone
  render_zone "$FOOBAR_SWARM_ZONE" "$EDGE_ADDRESSES"
  FOOBAR_SWARM_VERSION=$(cat config/*.toml config/prometheus/alerts.yml \
    config/prometheus/consoles/* config/prometheus/console_libraries/* \
    docker/swarm/prometheus.yml "$FOOBAR_SWARM_ZONE" | sha256sum | cut -c1-12)
  FOOBAR_SWARM_SECRETS_VERSION=$(cat secrets/* | sha256sum | cut -c1-12)
  FOOBAR_SWARM_ADMIN_FROM=$gateway
  export FOOBAR_SWARM_ZONE FOOBAR_SWARM_VERSION FOOBAR_SWARM_SECRETS_VERSION FOOBAR_SWARM_ADMIN_FROM
  step "docker stack deploy $STACK (www.foobar.com: $EDGE_ADDRESSES)"
  docker stack deploy --detach=true --prune --resolve-image never \
    --compose-file docker/swarm/stack.yml "$STACK"
  wait_ready "${FOOBAR_SWARM_TIMEOUT:-300}"
  step "waiting for the balancers to check every web task UP"
  wait_web_in_balancers 60
  service_replicas | column -t
  # The balancer's generated CA, for curl --cacert (a balancer on each edge node makes its own).
  mkdir -p tls
  docker cp "$(docker ps --quiet --filter label=com.docker.swarm.service.name=${STACK}_balancer |
    head -n1):/var/lib/foobar/tls/ca.pem" tls/swarm-ca.pem
  step "the stack is up and healthy on the swarm; its CA certificate is in tls/swarm-ca.pem"
  cat <<INFO

  dig @$gateway -p ${FOOBAR_SWARM_DNS_PORT:-53} www.foobar.com +short
  curl -s --cacert tls/swarm-ca.pem --resolve www.foobar.com:${FOOBAR_SWARM_HTTPS_PORT:-443}:$gateway https://www.foobar.com:${FOOBAR_SWARM_HTTPS_PORT:-443}/
  docker service scale ${STACK}_web=4     # more web servers; the balancers find them
  make swarm-deploy                       # roll web and the balancers to new images
  docker stack ps $STACK                  # every task;  make swarm-down  # remove it
INFO
}

deploy() {
  local service state
  for service in web balancer; do
    step "rolling ${STACK}_$service to $(docker service inspect --format \
      '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_$service")"
    # --force: the same tag names a new image; each new task must be healthy before the
    # next old one goes (update_config in the stack file).
    docker service update --force --detach=false --quiet "${STACK}_$service" || true
    # The CLI returns when the new tasks run; the update completes (or rolls back) after the
    # last one's monitor period.
    while true; do
      state=$(docker service inspect --format '{{.UpdateStatus.State}}' "${STACK}_$service")
      case $state in
        completed) break ;;
        rollback_*) echo "swarm: ${STACK}_$service was rolled back ($state): a new task did not get healthy" >&2; exit 1 ;;
        paused) echo "swarm: ${STACK}_$service's update is paused: docker service ps ${STACK}_$service" >&2; exit 1 ;;
      esac
      sleep 1
    done
  done
  wait_ready 120
}

down() {
  local volumes=${1:-} projects started=$SECONDS
  if [ -n "$(service_replicas)" ]; then
    step "docker stack rm $STACK"
    docker stack rm "$STACK" >/dev/null
  fi
  # stack rm returns at once; its containers and networks go in the background.
  while [ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] ||
    [ -n "$(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK")" ]; do
    (( SECONDS - started < 120 )) || { echo "swarm: the stack's tasks are still there" >&2; exit 1; }
    sleep 1
  done
  if [ "$volumes" = --volumes ]; then
    step "removing the stack's volumes"
    docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker volume rm >/dev/null
  fi
  if [ -e "$STATE/made-swarm" ]; then
    projects=$(compose_projects)
    if [ -n "$projects" ]; then
      echo "swarm: not leaving the swarm: compose project(s) ${projects//$'\n'/ } run on this engine," \
        "and leaving a swarm broke such a project's name lookups here. Stop them" \
        "(docker compose down), then run make swarm-down again." >&2
      exit 1
    fi
    step "docker swarm leave --force (make swarm-up made this swarm)"
    docker swarm leave --force >/dev/null
    rm -f "$STATE/made-swarm"
    if [ -e "$STATE/made-gwbridge" ]; then
      docker network rm docker_gwbridge >/dev/null
      rm -f "$STATE/made-gwbridge"
    fi
  fi
  step "the stack is removed"
}

case ${1:-} in
  up) up ;;
  deploy) deploy ;;
  down) down "${2:-}" ;;
  *) echo "usage: $0 up | deploy | down [--volumes]" >&2; exit 2 ;;
esac
