#!/usr/bin/env bash
# Starts the stack and waits until every container reports healthy, then says how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step "docker compose up (waits for every healthcheck)"
if ! docker compose up --detach --wait --wait-timeout 180; then
  docker compose ps >&2
  echo "some containers did not become healthy; see: docker compose logs" >&2
  exit 1
fi
docker compose ps --format 'table {{.Name}}\t{{.Status}}\t{{.Ports}}'
step "the stack is up and healthy"
cat <<INFO

  dig @127.0.0.1 -p ${DNS_PORT:-5353} www.foobar.com +short       # the healthy balancers
  curl -si http://127.0.0.1:${LB1_HTTP_PORT:-8080}/ | head -12      # through lb-1 (see X-Served-By)
  curl -si http://127.0.0.1:${LB2_HTTP_PORT:-8081}/ | head -12      # through lb-2
  docker compose ps                       # every container's health
  make down                               # stop (data kept);  make clean  # stop and delete data
INFO
