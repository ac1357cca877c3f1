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
# The balancers' generated CA, for curl --cacert and for a browser to trust.
mkdir -p tls
docker compose cp lb-1:/var/lib/foobar/tls/ca.pem tls/ca.pem >/dev/null
step "the stack is up and healthy; its CA certificate is in tls/ca.pem"
cat <<INFO

  dig @127.0.0.1 -p ${DNS_PORT:-5353} www.foobar.com +short       # the healthy balancers (dns-1)
  dig @127.0.0.1 -p ${DNS2_PORT:-5354} www.foobar.com +short       # the same from dns-2
  curl -si --cacert tls/ca.pem --resolve www.foobar.com:${LB1_HTTPS_PORT:-8443}:127.0.0.1 https://www.foobar.com:${LB1_HTTPS_PORT:-8443}/
  curl -si http://127.0.0.1:${LB2_HTTP_PORT:-8081}/ | head -3        # plain HTTP: 308 to HTTPS
  docker compose run --rm client curl -s https://www.foobar.com/      # as a visitor: DNS, lb, web, router, db
  curl -s --cacert tls/ca.pem --resolve status.foobar.com:${LB1_HTTPS_PORT:-8443}:127.0.0.1 -u "operator:\$(cat secrets/prometheus_password)" https://status.foobar.com:${LB1_HTTPS_PORT:-8443}/consoles/stack.html   # status page
  make demo                               # the failover demo;  make deploy  # rolling deploy
  docker compose ps                       # every container's health
  make down                               # stop (data kept);  make clean  # stop and delete data
INFO
