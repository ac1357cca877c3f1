#!/usr/bin/env bash
# foobar-balancer against HAProxy 2.6, in the same run, in front of the same two backends
# (nginx serving a small file): plain HTTP, keep-alive on both sides, round robin, health
# checks on. HAProxy twice: as configured bare (`haproxy`), and doing the same job as
# foobar-balancer (`haproxy-headers`: X-Forwarded-For, -Proto, -Host, Forwarded, Via both
# ways, X-Request-Id kept or made and returned), since those headers cost the backends and wrk
# on CPU 1 too. The balancers pinned to CPU 0 (measured in turn, in rounds), wrk to CPU 1, and
# the two nginx backends to CPU 0 by default (NGINX_CPU): beside wrk they made CPU 1 the limit
# (99% busy, the balancer's CPU 0 at 90%), so the figure measured wrk and nginx, not the
# balancer; on CPU 0 the balancer's cost per request decides the rate.
# Prints requests per second, p50 and p99 for each, the ratios, CPU per request and
# foobar-balancer's idle memory (RSS).
#
#   bench/balancer.sh                 # 3 rounds of 20 s per balancer, in turn
#   DURATION=10 ROUNDS=5 bench/balancer.sh
#   CONNECTIONS=100 bench/balancer.sh # wrk's open connections (default 50)
#   NGINX_CPU=1 bench/balancer.sh     # the backends beside wrk instead
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

NGINX_CPU=${NGINX_CPU:-0}
bench_ports 15401 BACKEND_A_PORT BACKEND_B_PORT HAPROXY_PORT FOOBAR_PORT
bench_ports 15406 HAPROXY_HEADERS_PORT # 15405 is bench/router.sh's

bench_start balancer foobar-balancer

# HAProxy (haproxy_common, bench/lib.sh) bare, and with the same headers as foobar-balancer adds
# (HAProxy 2.6 has no "option forwarded": by hand).
{
  haproxy_common 4096 "$BACKEND_A_PORT" "$BACKEND_B_PORT"
  cat <<CONF
frontend web
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend webs
frontend web-headers
    bind 127.0.0.1:$HAPROXY_HEADERS_PORT
    option forwardfor
    unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
    http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
    http-request set-var(txn.request_id) req.hdr(x-request-id)
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Forwarded "for=%[src];proto=http;host=\\"%[req.hdr(host)]\\""
    http-request add-header Via "1.1 haproxy"
    http-response add-header Via "1.1 haproxy"
    http-response set-header X-Request-Id %[var(txn.request_id)]
    default_backend webs
CONF
} > "$work/haproxy.cfg"

{
  foobar_common 4096 "$BACKEND_A_PORT" "$BACKEND_B_PORT" "$FOOBAR_PORT"
  printf '[https]\nenabled = false\n'
} > "$work/foobar-balancer.toml"

# A run of wrk against PORT (run_wrk, bench/lib.sh: NAME's figures and the server's CPU).
measure() { # name port sid
  step "wrk against $1 for ${DURATION}s, $CONNECTIONS connections (balancers on CPU 0, wrk on CPU 1, nginx on CPU $NGINX_CPU)"
  run_wrk "$1" "$3" 2 "http://127.0.0.1:$2/index.html"
}
nginx_backends "$BACKEND_A_PORT" "$BACKEND_B_PORT" "$NGINX_CPU"

step "starting HAProxy $(haproxy -v | awk 'NR == 1 {print $3}') and foobar-balancer, both on CPU 0"
start_balancers
http_answering "$HAPROXY_PORT" /index.html
http_answering "$HAPROXY_HEADERS_PORT" /index.html
http_answering "$FOOBAR_PORT" /index.html
sleep 1 # settled: what it holds before any load is its idle memory
idle_rss=$(rss_kb "$foobar_pid")

# In turn, ROUNDS times; each judged by its median round (median_round, bench/lib.sh).
for round in $(seq 1 "$ROUNDS"); do
  measure "haproxy-$round" "$HAPROXY_PORT" "$haproxy_pid"
  measure "haproxy-headers-$round" "$HAPROXY_HEADERS_PORT" "$haproxy_pid"
  measure "foobar-balancer-$round" "$FOOBAR_PORT" "$foobar_pid"
done
haproxy_rss=$(rss_kb "$haproxy_pid")
loaded_rss=$(rss_kb "$foobar_pid")

names=(haproxy haproxy-headers foobar-balancer)
echo
print_rounds "${names[@]}"
printf '%-16s %12s %10s %10s %10s %14s %10s\n' "balancer" "requests/s" "p50 ms" "p99 ms" "failed" "CPU us/req" "RSS MB"
for name in "${names[@]}"; do
  run=$(median_round "$name")
  rss=$haproxy_rss
  [ "$name" = foobar-balancer ] && rss=$loaded_rss
  failed=$(failed_rounds "$name")
  printf '%-16s %12.0f %10s %10s %10s %14s %10s\n' "$name" "$(rps "$run")" "$(percentile "$run" 50)" \
    "$(percentile "$run" 99)" "$failed" "$(per_request "$name")" "$((rss / 1024))"
done
echo "(median round of $ROUNDS, ${DURATION}s each; failed and CPU over every round)"
foobar=$(median_round foobar-balancer)
for reference in haproxy-headers haproxy; do
  other=$(median_round "$reference")
  printf 'ratio foobar-balancer / %-15s requests per second %s (target >= 1.00), p99 latency %s (target <= 1.00)\n' \
    "$reference:" "$(awk -v a="$(rps "$foobar")" -v b="$(rps "$other")" 'BEGIN { printf "%.2f", a / b }')" \
    "$(awk -v a="$(percentile "$foobar" 99)" -v b="$(percentile "$other" 99)" 'BEGIN { printf "%.2f", a / b }')"
done
echo "foobar-balancer RSS: idle $((idle_rss / 1024)) MB ($idle_rss kB), after load $((loaded_rss / 1024)) MB (target idle < 15 MB)"
