# shellcheck shell=bash
# Shared by the benchmarks in bench/. Source it from the repository's root: it sources
# scripts/lib.sh (for `step`), sets the settings every benchmark shares, and defines functions.
# `bench_start` sets `work` (a scratch folder), `pids` (the servers' process groups, killed on
# exit) and `binary` (the release build under test).
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# The settings every benchmark shares, each kept when the environment sets it: ROUNDS rounds,
# DURATION seconds each measured run (a benchmark with another default sets DURATION before
# it sources this file: dns.sh, router.sh), and CONNECTIONS open connections for wrk and
# h2load (balancer.sh, https.sh, static.sh).
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}

# bench_ports FIRST NAME...: a benchmark's ports, each variable NAME set to FIRST, FIRST + 1,
# ... in turn unless the environment sets it, with nothing listening on any of them yet
# (tcp_port_free).
bench_ports() {
  local port=$1 name; shift
  for name in "$@"; do
    printf -v "$name" '%s' "${!name:-$port}"
    tcp_port_free "${!name}"
    port=$((port + 1))
  done
}

# bench_start NAME BINARY: the benchmark tools (install-tools.sh bench), the scratch folder,
# the cleanup on exit, and a release build.
# A server is started with `setsid` and its pid added to `pids`: it is then the id of the
# server's session and process group, which cpu_seconds measures and bench_cleanup kills.
bench_start() {
  local name=$1 bin=$2
  bash scripts/install-tools.sh bench
  work=$(mktemp -d "/tmp/foobar-bench-$name.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  step "building $bin (release)"
  cargo build --release --locked --bin "$bin" 2>&1 | tail -n 1
  # shellcheck disable=SC2034 # for the script that sourced this file
  binary="${CARGO_TARGET_DIR:-target}"/release/$bin
}

# Each server runs in its own session and process group (setsid): kill the whole group.
bench_cleanup() {
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# A server must not start where another one already listens, or we would measure that one.
tcp_port_free() { # port
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "something already listens on 127.0.0.1:$1; stop it or set the *_PORT variables" >&2
    exit 1
  fi
}

http_answering() { # port path
  for _ in $(seq 1 100); do
    if curl -fs -o /dev/null "http://127.0.0.1:$1$2"; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers http://127.0.0.1:$1$2" >&2; return 1
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# The one CPU meter of every benchmark: CPU seconds (user + system) used so far by the
# processes of session SID, with those of children they have reaped. A server is measured by
# its session, not its pid, because some fork and re-fork their workers (NSD, nginx).
cpu_seconds() { # sid
  local pid
  for pid in $(ps -e -o sid=,pid= | awk -v sid="$1" '$1 == sid { print $2 }'); do
    # The fields after the command name, which is in parentheses and may contain spaces:
    # utime, stime, cutime and cstime are the 12th to 15th of them.
    sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null || true
  done | awk -v hz="$(getconf CLK_TCK)" '{ t += $12 + $13 + $14 + $15 } END { printf "%.2f\n", t / hz }'
}

# The one median of every benchmark: of "VALUE LABEL" lines on stdin, the LABEL of the median
# value (the lower of the middle two for an even count).
median() { sort -n | awk '{ label[NR] = $2 } END { print label[int((NR + 1) / 2)] }'; }

# wrk's latency figure (`812.00us`, `1.20ms`, `1.05s`) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { printf "%s", v } }'
}

# Figures of the run NAME: a wrk run's output is $work/NAME.wrk; an h2load run (run_h2load)
# leaves its figures in $work/NAME.rps, .p50, .p99, .requests and .failed instead.
rps() {
  if [ -f "$work/$1.rps" ]; then cat "$work/$1.rps"; else awk '/Requests\/sec/ {print $2}' "$work/$1.wrk"; fi
}
percentile() { # name 50|99: milliseconds
  if [ -f "$work/$1.p$2" ]; then cat "$work/$1.p$2"; else to_ms "$(awk -v p="$2%" '$1 == p {print $2}' "$work/$1.wrk")"; fi
}
requests_done() {
  if [ -f "$work/$1.requests" ]; then cat "$work/$1.requests"; else awk '/requests in/ {print $1}' "$work/$1.wrk"; fi
}
# Answers that are not 2xx or 3xx, and requests that got no answer (socket errors, timeouts).
failures() {
  if [ -f "$work/$1.failed" ]; then cat "$work/$1.failed"; else
    awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$work/$1.wrk"
  fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# run_wrk NAME SID WARMUP URL: wrk pinned to CPU 1 with CONNECTIONS connections, WARMUP s not
# measured, then DURATION s with its output in $work/NAME.wrk and the CPU seconds the server
# (session SID: cpu_seconds) used meanwhile in $work/NAME.cpu.
run_wrk() {
  local name=$1 sid=$2 warmup=$3 url=$4 before
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${warmup}s" "$url" > /dev/null
  before=$(cpu_seconds "$sid")
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" > "$work/$name.wrk" 2>&1
  awk -v a="$(cpu_seconds "$sid")" -v b="$before" 'BEGIN { print a - b }' > "$work/$name.cpu"
  grep -E 'Requests/sec|Non-2xx|Socket errors|requests in' "$work/$name.wrk" | sed 's/^/    /' >&2
}

# run_h2load NAME SID H2LOAD-ARGS...: h2load pinned to CPU 1 with a log of every request, from
# which p50 and p99 are taken (h2load prints only min, mean and max), and the CPU seconds the
# server (session SID: cpu_seconds; none for "-") used meanwhile in $work/NAME.cpu. The rate is h2load's
# (requests done over the time it ran); 3xx counts as an answer (a post's redirect).
run_h2load() {
  local name=$1 sid=$2 before=0; shift 2
  [ "$sid" = - ] || before=$(cpu_seconds "$sid")
  taskset -c 1 h2load --log-file="$work/$name.log" "$@" > "$work/$name.h2load" 2>&1 || true
  [ "$sid" = - ] || awk -v a="$(cpu_seconds "$sid")" -v b="$before" 'BEGIN { print a - b }' > "$work/$name.cpu"
  h2load_figures "$name"
}
h2load_figures() { # name: from $work/NAME.h2load and $work/NAME.log
  local out="$work/$1.h2load"
  awk '/^finished in/ {print $4 + 0}' "$out" > "$work/$1.rps"
  awk '/^requests:/ {print $6 + 0}' "$out" > "$work/$1.requests"
  # Done but not answered 2xx or 3xx: errors, timeouts, 4xx and 5xx. h2load counts the
  # status of answers that arrive after its deadline but not their requests as done (seen:
  # 318624 2xx of 318622 done), so a difference below 0 is 0 failures.
  awk '/^requests:/ {d = $6} /^status codes:/ {a = $3 + $5} END {f = d - a; print (f > 0 ? f : 0)}' "$out" > "$work/$1.failed"
  local p50 p99
  read -r p50 p99 < <(sort -n -k3,3 "$work/$1.log" | awk '{ d[NR] = $3 } END {
      if (NR == 0) print "- -"
      else printf "%.3f %.3f\n", d[int((NR - 1) * 0.50) + 1] / 1000, d[int((NR - 1) * 0.99) + 1] / 1000 }')
  echo "$p50" > "$work/$1.p50"
  echo "$p99" > "$work/$1.p99"
  rm -f "$work/$1.log"
  grep -E '^finished in|^requests:|^status codes:' "$out" | sed 's/^/    /' >&2
}

# CPU microseconds per request over every round of NAME (runs NAME-1 .. NAME-ROUNDS).
per_request() { # name
  local round
  for round in $(seq 1 "$ROUNDS"); do
    echo "$(cat "$work/$1-$round.cpu") $(requests_done "$1-$round")"
  done | awk '{ cpu += $1; n += $2 } END { if (n > 0) printf "%.1f", cpu * 1e6 / n; else print "-" }'
}
# How busy a core was over every round of NAME: the CPU time in $work/NAME-ROUND.EXT, in
# units of which PER_SECOND make a second (1: seconds, 1e9: nanoseconds), as a whole
# percentage of DURATION s times ROUNDS.
core_busy() { # name ext per-second
  local round
  for round in $(seq 1 "$ROUNDS"); do cat "$work/$1-$round.$2"; done \
    | awk -v s="$3" -v d="$DURATION" -v r="$ROUNDS" '{ t += $1 } END { printf "%.0f", 100 * t / s / (d * r) }'
}
failed_rounds() { # name: failures over every round of NAME
  local round n=0
  for round in $(seq 1 "$ROUNDS"); do n=$((n + $(failures "$1-$round"))); done
  echo "$n"
}

# nginx_conf: $work/nginx.conf for the nginx of every benchmark: in the foreground, one
# worker, its log, pid and temporary files in $work, no access log, keep-alive connections
# for the whole run. The rest of its http block (servers, other directives) comes on stdin.
nginx_conf() {
  mkdir -p "$work/nginx-temp"
  chmod 755 "$work" # nginx's workers run as nobody when started by root
  {
    cat <<CONF
daemon off;
worker_processes 1;
error_log $work/nginx-error.log warn;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $work/nginx-temp;
    proxy_temp_path $work/nginx-temp;
    fastcgi_temp_path $work/nginx-temp;
    uwsgi_temp_path $work/nginx-temp;
    scgi_temp_path $work/nginx-temp;
CONF
    sed 's/^/    /'
    echo "}"
  } > "$work/nginx.conf"
}

# nginx_backends PORT_A PORT_B CPU: one nginx, one worker, answering on both ports with a
# 612-byte page (nginx's own index size) at /index.html and 200 at /readyz; started pinned to
# CPU into `pids`, returns once both ports answer.
nginx_backends() {
  mkdir -p "$work/www"
  head -c 612 /dev/zero | tr '\0' 'x' > "$work/www/index.html"
  nginx_conf <<CONF
server {
    listen 127.0.0.1:$1;
    listen 127.0.0.1:$2;
    root $work/www;
    location = /readyz { return 200 "ready\n"; }
}
CONF
  step "starting nginx $(nginx -v 2>&1 | awk -F/ '{print $2}') (two backends) on CPU $3"
  setsid taskset -c "$3" nginx -e "$work/nginx-error.log" -c "$work/nginx.conf" -p "$work" > "$work/nginx.out" 2>&1 &
  pids+=($!)
  http_answering "$1" /index.html
  http_answering "$2" /index.html
}

# Benchmarks that measure two servers in turn over ROUNDS rounds (runs NAME-1 .. NAME-ROUNDS)
# judge each by its median round: whatever else the machine does during one round then weighs
# on one round of each, not on one server's whole figure.
median_round() { # name: prints NAME-ROUND of the round with the median requests per second
  local round
  for round in $(seq 1 "$ROUNDS"); do echo "$(rps "$1-$round") $1-$round"; done | median
}
print_rounds() { # name...: each one's requests per second, round by round
  local name round
  for name in "$@"; do
    printf '%-16s requests/s by round:' "$name"
    for round in $(seq 1 "$ROUNDS"); do printf ' %.0f' "$(rps "$name-$round")"; done
    echo
  done
}

# What both balancer benchmarks (balancer.sh, https.sh) give the two balancers in front of
# nginx_backends' two ports: one thread, round robin, keep-alive to clients and backends
# (connections reused across requests), the same health checks and timeouts. Each prints its
# part of a configuration; the scripts add the listeners (HAProxy's frontends, the
# balancer's [https] section).
haproxy_common() { # maxconn port-a port-b: HAProxy's global, defaults and backend `webs`
  cat <<CONF
global
    nbthread 1
    maxconn $1
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s
backend webs
    balance roundrobin
    option httpchk GET /readyz
    server a 127.0.0.1:$2 check inter 1s rise 2 fall 2
    server b 127.0.0.1:$3 check inter 1s rise 2 fall 2
CONF
}
# start_balancers: HAProxy with $work/haproxy.cfg and foobar-balancer with
# $work/foobar-balancer.toml, both pinned to CPU 0, into `pids`; sets haproxy_pid and
# foobar_pid, the sessions to measure.
start_balancers() {
  setsid taskset -c 0 haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.out" 2>&1 &
  pids+=($!)
  # shellcheck disable=SC2034 # for the script that sourced this file
  haproxy_pid=${pids[-1]}
  RUST_LOG=warn setsid taskset -c 0 "$binary" --config "$work/foobar-balancer.toml" > "$work/foobar.out" 2>&1 &
  pids+=($!)
  # shellcheck disable=SC2034
  foobar_pid=${pids[-1]}
}
foobar_common() { # max-connections port-a port-b http-port: foobar-balancer's admin listener
  # (any free port), plain HTTP listener (no redirect), pool, checks, timeouts and limits
  cat <<CONF
[service]
admin_listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:$4"
redirect_to_https = false
[pool]
algorithm = "round_robin"
[[pool.backends]]
address = "127.0.0.1:$2"
[[pool.backends]]
address = "127.0.0.1:$3"
[health]
path = "/readyz"
interval = "1s"
[timeouts]
connect = "1s"
response = "30s"
[limits]
max_connections = $1
header_read_timeout = "10s"
CONF
}
