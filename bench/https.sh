#!/usr/bin/env bash
# foobar-balancer against HAProxy 2.6 (Debian's, OpenSSL; bare: round robin, keep-alive,
# `http-reuse always`, one thread) terminating TLS with the same ECDSA P-256 certificate, in
# front of the same two nginx backends (a 612-byte page), in the same run. The balancers and
# nginx pinned to CPU 0 (NGINX_CPU), the client to CPU 1, each mode measured in turn over
# ROUNDS rounds and judged by its median round (bench/lib.sh), as bench/balancer.sh does.
# Four modes:
#   h1        HTTP/1.1 over TLS, keep-alive: wrk, CONNECTIONS connections, DURATION s.
#   h2        HTTP/2, H2_CLIENTS connections of H2_STREAMS concurrent streams each: h2load,
#             DURATION s.
#   full      new full TLS handshakes: h2load -c HANDSHAKES -n HANDSHAKES, every connection
#             new, one request each, no session to resume (each h2load client connects once).
#   resumed   resumed handshakes: h2load --h1 with `Connection: close`, CONNECTIONS clients,
#             RESUMES requests in all; each client opens a new connection for every request
#             and resumes the session (ticket) of its previous one (the first is full). Checked first with openssl s_client:
#             the line "session resumption" says whether each server resumed.
# For each mode and server: requests per second, p50 and p99 (wrk's; for h2load, of its log of
# every request: for `full` and `resumed` that is the request after the handshake, so h2load's
# mean connect time, the TCP and TLS handshake, is printed beside it), failures, CPU per
# request (the server's process only, every round), and the ratios foobar / HAProxy.
#
#   bench/https.sh                          # 3 rounds of 20 s per mode and server (~8 min)
#   ROUNDS=5 DURATION=15 bench/https.sh
#   MODES="h2 full" bench/https.sh          # some modes only
#   HANDSHAKES=4000 RESUMES=40000 H2_CLIENTS=10 H2_STREAMS=10 CONNECTIONS=50 bench/https.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

MODES=${MODES:-h1 h2 full resumed}
H2_CLIENTS=${H2_CLIENTS:-10}
H2_STREAMS=${H2_STREAMS:-10}
HANDSHAKES=${HANDSHAKES:-2000}
RESUMES=${RESUMES:-20000}
WARMUP=${WARMUP:-2}
NGINX_CPU=${NGINX_CPU:-0}
bench_ports 15411 BACKEND_A_PORT BACKEND_B_PORT HAPROXY_PORT FOOBAR_PORT FOOBAR_HTTP_PORT

bench_start https foobar-balancer

step "an ECDSA P-256 certificate for localhost (openssl), for both balancers"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"

# HAProxy (haproxy_common, bench/lib.sh) with TLS on the frontend (its defaults: session cache
# and tickets on), HTTP/2 and HTTP/1.1 by ALPN; foobar-balancer with the same pool.
{
  haproxy_common 8000 "$BACKEND_A_PORT" "$BACKEND_B_PORT"
  cat <<CONF
frontend web
    bind 127.0.0.1:$HAPROXY_PORT ssl crt $work/haproxy.pem alpn h2,http/1.1
    default_backend webs
CONF
} > "$work/haproxy.cfg"

{
  foobar_common 8000 "$BACKEND_A_PORT" "$BACKEND_B_PORT" "$FOOBAR_HTTP_PORT"
  cat <<CONF
[https]
enabled = true
listen = "127.0.0.1:$FOOBAR_PORT"
cert = "$work/cert.pem"
key = "$work/key.pem"
CONF
} > "$work/foobar-balancer.toml"

https_answering() { # port
  for _ in $(seq 1 100); do
    if curl -fsk -o /dev/null "https://localhost:$1/index.html"; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers https://localhost:$1/index.html" >&2; return 1
}

# Whether a server resumes a TLS session: a first connection saves its session (the ticket
# comes after the handshake, so a request is made to wait for it), a second offers it.
resumes() { # port -> "yes" or "no"
  local request='GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
  # shellcheck disable=SC2059 # the request's \r\n are printf's to expand
  printf "$request" | openssl s_client -connect "127.0.0.1:$1" -servername localhost -quiet \
    -sess_out "$work/session-$1.pem" >/dev/null 2>&1 || true
  # shellcheck disable=SC2059
  if printf "$request" | openssl s_client -connect "127.0.0.1:$1" -servername localhost \
       -sess_in "$work/session-$1.pem" 2>/dev/null | grep -q '^Reused,'; then
    echo yes
  else
    echo no
  fi
}

# WARMUP seconds of the same load, not measured (the CPU meter would count them).
warm_up() { taskset -c 1 h2load -D "$WARMUP" "$@" > /dev/null 2>&1 || true; }

url() { echo "https://localhost:$1/index.html"; }

# One run of MODE against a server: NAME's figures (bench/lib.sh: rps, percentile,
# requests_done, failures) and the server's CPU seconds meanwhile in $work/NAME.cpu.
run_mode() { # mode name port sid
  local mode=$1 name=$2 port=$3 sid=$4
  case "$mode" in
    h1)
      step "$name: wrk, HTTP/1.1 over TLS, $CONNECTIONS keep-alive connections, ${DURATION}s"
      run_wrk "$name" "$sid" "$WARMUP" "$(url "$port")"
      ;;
    h2)
      step "$name: h2load, HTTP/2, $H2_CLIENTS connections x $H2_STREAMS streams, ${DURATION}s"
      warm_up -c "$H2_CLIENTS" -m "$H2_STREAMS" "$(url "$port")"
      run_h2load "$name" "$sid" -c "$H2_CLIENTS" -m "$H2_STREAMS" -D "$DURATION" "$(url "$port")"
      ;;
    full)
      step "$name: h2load, $HANDSHAKES new connections with a full handshake, one request each"
      run_h2load "$name" "$sid" -c "$HANDSHAKES" -n "$HANDSHAKES" "$(url "$port")"
      ;;
    resumed)
      # By count: h2load's -D never ends while its clients reconnect after every request.
      step "$name: h2load --h1, Connection: close, $CONNECTIONS clients, $RESUMES requests, each on a new connection resuming a session"
      taskset -c 1 h2load --h1 -H 'Connection: close' -c "$CONNECTIONS" -n "$((CONNECTIONS * 20))" "$(url "$port")" > /dev/null 2>&1 || true
      run_h2load "$name" "$sid" --h1 -H 'Connection: close' -c "$CONNECTIONS" -n "$RESUMES" "$(url "$port")"
      ;;
    *) echo "unknown mode '$mode' (MODES: h1 h2 full resumed)" >&2; exit 2 ;;
  esac
}
# h2load's mean time for connect (TCP and TLS handshake) in ms; "-" for wrk's runs.
connect_ms() { # name
  if [ -f "$work/$1.h2load" ]; then
    to_ms "$(awk '/^time for connect:/ {print $6}' "$work/$1.h2load")"
  else
    echo "-"
  fi
}

nginx_backends "$BACKEND_A_PORT" "$BACKEND_B_PORT" "$NGINX_CPU"

step "starting HAProxy $(haproxy -v | awk 'NR == 1 {print $3}') and foobar-balancer with TLS, both on CPU 0"
start_balancers
https_answering "$HAPROXY_PORT"
https_answering "$FOOBAR_PORT"
sleep 1 # settled: what it holds before any load is its idle memory
idle_rss=$(rss_kb "$foobar_pid")
haproxy_resumes=$(resumes "$HAPROXY_PORT")
foobar_resumes=$(resumes "$FOOBAR_PORT")
step "session resumption: haproxy $haproxy_resumes, foobar-balancer $foobar_resumes"

for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    step "round $round of $ROUNDS, mode $mode"
    run_mode "$mode" "$mode-haproxy-$round" "$HAPROXY_PORT" "$haproxy_pid"
    run_mode "$mode" "$mode-foobar-$round" "$FOOBAR_PORT" "$foobar_pid"
  done
done
loaded_rss=$(rss_kb "$foobar_pid")
haproxy_rss=$(rss_kb "$haproxy_pid")

echo
for mode in $MODES; do
  print_rounds "$mode-haproxy" "$mode-foobar"
done
echo
printf '%-8s %-16s %12s %9s %9s %11s %8s %11s\n' mode server requests/s "p50 ms" "p99 ms" "connect ms" failed "CPU us/req"
for mode in $MODES; do
  for server in haproxy foobar; do
    run=$(median_round "$mode-$server")
    label=$server; [ "$server" = foobar ] && label="foobar-balancer"
    printf '%-8s %-16s %12.0f %9s %9s %11s %8s %11s\n' "$mode" "$label" "$(rps "$run")" \
      "$(percentile "$run" 50)" "$(percentile "$run" 99)" "$(connect_ms "$run")" \
      "$(failed_rounds "$mode-$server")" "$(per_request "$mode-$server")"
  done
done
echo "(median round of $ROUNDS; failed and CPU over every round; p50/p99 of h2load's modes are each"
echo " request's time after its connection's handshake, connect ms h2load's mean TCP+TLS handshake)"
echo
for mode in $MODES; do
  foobar=$(median_round "$mode-foobar")
  haproxy=$(median_round "$mode-haproxy")
  printf 'ratio foobar-balancer / haproxy, %-8s requests/s %s (target >= 1.00), p99 %s (target <= 1.00), CPU per request %s (target <= 1.00)\n' \
    "$mode:" "$(ratio "$(rps "$foobar")" "$(rps "$haproxy")")" \
    "$(ratio "$(percentile "$foobar" 99)" "$(percentile "$haproxy" 99)")" \
    "$(ratio "$(per_request "$mode-foobar")" "$(per_request "$mode-haproxy")")"
done
echo "session resumption (openssl s_client -sess_in): haproxy $haproxy_resumes, foobar-balancer $foobar_resumes"
echo "RSS: foobar-balancer idle $((idle_rss / 1024)) MB ($idle_rss kB), after load $((loaded_rss / 1024)) MB (target idle < 15 MB); haproxy after load $((haproxy_rss / 1024)) MB"
