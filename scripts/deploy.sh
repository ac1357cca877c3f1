#!/usr/bin/env bash
# Rolling deploy without downtime (docs/operations.md): recreates web-a, web-b, lb-1 and lb-2,
# one at a time, from their current images (run `make images` first to deploy new code), while
# the others serve. `make deploy`; another order or subset: make deploy SERVICES="web-b lb-2".
#
#   A web server is drained on both balancers first (no new requests; in-flight ones
#   finish), recreated, waited for until healthy, enabled again, and waited for until both
#   balancers have it UP. No request is ever sent to a web server that is going away.
#
#   A balancer is recreated; its SIGTERM starts a lame duck of service.shutdown_delay (7 s,
#   config/balancer.toml): /readyz fails, so foobar-dns drops it from www.foobar.com within
#   2 s, and resolvers forget the old answer (TTL 5 s), while it still serves whoever comes;
#   then it finishes its in-flight requests and exits. The new one must be healthy and back in
#   foobar-dns's answer before the next balancer goes.
#
# Another compose project (the stack tests'): COMPOSE_ENV_FILE=path/to/env-file.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

read -r -a services <<<"${SERVICES:-web-a web-b lb-1 lb-2}"
balancers=(lb-1 lb-2)

compose() {
  if [ -n "${COMPOSE_ENV_FILE:-}" ]; then
    docker compose --env-file "$COMPOSE_ENV_FILE" "$@"
  else
    docker compose "$@"
  fi
}

# Where a balancer's admin listener is published on the host (127.0.0.1:PORT).
admin() { compose port "$1" 9100; }

# "STATE IN_FLIGHT" for each backend a balancer resolved from config entry $2 (web-a:8080):
# status.json names each address it resolved `web-a:8080@ADDRESS`.
backend_states() {
  curl -fsS --max-time 2 "http://$(admin "$1")/status.json" |
    jq -r --arg entry "$2@" '.backends[] | select(.name | startswith($entry)) | "\(.state) \(.in_flight)"'
}

# Every backend of $1 drained with nothing in flight, on every balancer.
drained_and_idle() {
  local lb states
  for lb in "${balancers[@]}"; do
    states=$(backend_states "$lb" "$1:8080") || return 1
    [ -n "$states" ] && ! grep -qv '^DRAIN 0$' <<<"$states" || return 1
  done
}

# A backend of $1 UP on every balancer.
up_everywhere() {
  local lb
  for lb in "${balancers[@]}"; do
    backend_states "$lb" "$1:8080" | grep -q '^UP ' || return 1
  done
}

# Both DNS servers (dns-1, dns-2) answer www.foobar.com with balancer $1's address.
in_dns() {
  local address server dns
  address=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' \
    "$(compose ps --quiet "$1")")
  for server in dns-1 dns-2; do
    dns=$(compose port --protocol udp "$server" 53)
    dig +short +time=1 +tries=1 -p "${dns##*:}" @127.0.0.1 www.foobar.com \
      | grep -qxF -f <(tr ' ' '\n' <<<"$address" | grep .) || return 1
  done
}

# wait_until WHAT SECONDS COMMAND...: runs COMMAND every 250 ms until it succeeds.
wait_until() {
  local what=$1 seconds=$2 i
  shift 2
  for ((i = 0; i < seconds * 4; i++)); do
    "$@" && return 0
    sleep 0.25
  done
  echo "deploy: $what: not within ${seconds} s; the stack is as it is now (docker compose ps)" >&2
  exit 1
}

# Drain or enable: state-changing, so it carries the admin token (scripts/secrets.sh), which
# curl reads from a file (-H @FILE) so it never appears on a command line.
balancer_action() {
  local lb
  for lb in "${balancers[@]}"; do
    curl -fsS --max-time 5 -X POST -H @<(printf 'Authorization: Bearer %s\n' "$(cat secrets/admin_token)") \
      "http://$(admin "$lb")/backends/$1:8080/$2" >/dev/null
  done
}

recreate() {
  compose up --detach --no-deps --force-recreate --wait --wait-timeout 120 "$1"
}

for service in "${services[@]}"; do
  case $service in
    web-*)
      step "$service: drain on both balancers, wait for its in-flight requests"
      balancer_action "$service" drain
      wait_until "$service drained" 60 drained_and_idle "$service"
      step "$service: recreate, wait until healthy"
      recreate "$service"
      balancer_action "$service" enable
      wait_until "$service up on both balancers" 60 up_everywhere "$service"
      ;;
    lb-*)
      step "$service: recreate (lame duck first: out of DNS, still serving), wait until healthy"
      recreate "$service"
      wait_until "$service back in foobar-dns's answer" 60 in_dns "$service"
      ;;
    *)
      echo "deploy: $service is not a web server or a balancer (web-a, web-b, lb-1, lb-2)" >&2
      exit 2
      ;;
  esac
done
step "deployed: ${services[*]}"
