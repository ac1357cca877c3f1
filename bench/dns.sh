#!/usr/bin/env bash
# foobar-dns against NSD, in the same run, on the same zone and the same query mix:
# each server pinned to CPU 0, dnsperf pinned to CPU 1, DURATION seconds each (default 30).
# Prints queries per second for both, the ratio, and foobar-dns's idle memory (RSS).
#
#   bench/dns.sh            # 30 s per server
#   DURATION=10 bench/dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source bench/lib.sh

DURATION=${DURATION:-30}
NSD_PORT=${NSD_PORT:-15301}
FOOBAR_PORT=${FOOBAR_PORT:-15302}
bash scripts/install-tools.sh bench

bench_start dns foobar-dns

cp config/zones/foobar.com.zone "$work/foobar.com.zone"

# The query mix: mostly www A, plus names that do not exist (NXDOMAIN) and a type that www
# does not have (NODATA), plus the other records of the zone.
{
  for _ in $(seq 1 80); do echo "www.foobar.com A"; done
  for i in $(seq 1 10); do echo "nx$i.foobar.com A"; done
  for _ in $(seq 1 6); do echo "www.foobar.com AAAA"; done
  echo "foobar.com MX"; echo "foobar.com NS"; echo "status.foobar.com A"; echo "foobar.com SOA"
} > "$work/queries.txt"

cat > "$work/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    server-count: 1
    username: ""
    chroot: ""
    database: ""
    zonelistfile: "$work/zone.list"
    xfrdfile: "$work/xfrd.state"
    pidfile: "$work/nsd.pid"
    logfile: "$work/nsd.log"
    hide-version: yes
    verbosity: 0
    # Debian builds NSD with response rate limiting on (200 answers/s per client): it would
    # throttle dnsperf's single client. foobar-dns has none, so NSD runs without it too.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: foobar.com
    zonefile: "$work/foobar.com.zone"
CONF

cat > "$work/foobar-dns.toml" <<CONF
[service]
admin_listen = "127.0.0.1:0"
[dns]
listen = "127.0.0.1:$FOOBAR_PORT"
[[zone]]
origin = "foobar.com"
file = "$work/foobar.com.zone"
CONF

wait_answering() { # port
  for _ in $(seq 1 100); do
    if dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short www.foobar.com A >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2; return 1
}

# A server must not start where another one already answers, or we would measure that one.
port_free() { # port
  if dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short www.foobar.com A >/dev/null 2>&1; then
    echo "something already answers DNS on 127.0.0.1:$1; stop it or set NSD_PORT/FOOBAR_PORT" >&2
    exit 1
  fi
}

run_dnsperf() { # name port -> prints qps
  local name=$1 port=$2
  step "dnsperf against $name for ${DURATION}s (server on CPU 0, dnsperf on CPU 1)" >&2
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l "$DURATION" -T 1 -c 1 -q 200 \
    > "$work/$name.dnsperf" 2>&1
  grep -E 'Queries (sent|completed|lost)|Queries per second|Average Latency' "$work/$name.dnsperf" | sed 's/^/    /' >&2
  awk '/Queries per second/ {print $4}' "$work/$name.dnsperf"
}

port_free "$NSD_PORT"
port_free "$FOOBAR_PORT"
step "starting NSD $(nsd -v 2>&1 | head -n1 | awk '{print $3}') on CPU 0"
setsid taskset -c 0 nsd -d -c "$work/nsd.conf" > "$work/nsd.out" 2>&1 &
pids+=($!)
wait_answering "$NSD_PORT"
nsd_cpu_before=$(cpu_seconds "${pids[0]}")
nsd_qps=$(run_dnsperf nsd "$NSD_PORT")
nsd_cpu=$(awk -v a="$(cpu_seconds "${pids[0]}")" -v b="$nsd_cpu_before" 'BEGIN { print a - b }')
kill -- "-${pids[0]}" 2>/dev/null || true
wait "${pids[0]}" 2>/dev/null || true

step "starting foobar-dns on CPU 0"
RUST_LOG=warn setsid taskset -c 0 "$binary" --config "$work/foobar-dns.toml" > "$work/foobar.out" 2>&1 &
pids+=($!)
wait_answering "$FOOBAR_PORT"
sleep 1
idle_rss=$(rss_kb "${pids[1]}")
foobar_cpu_before=$(cpu_seconds "${pids[1]}")
foobar_qps=$(run_dnsperf foobar-dns "$FOOBAR_PORT")
foobar_cpu=$(awk -v a="$(cpu_seconds "${pids[1]}")" -v b="$foobar_cpu_before" 'BEGIN { print a - b }')
loaded_rss=$(rss_kb "${pids[1]}")

ratio=$(awk -v a="$foobar_qps" -v b="$nsd_qps" 'BEGIN { printf "%.2f", a / b }')
# CPU per query: when dnsperf's core is the limit, both servers answer about as fast as it
# asks, and what tells them apart is how much of their core each answer costs.
per_query() { awk -v cpu="$1" -v qps="$2" -v d="$DURATION" 'BEGIN { printf "%.2f", cpu * 1e6 / (qps * d) }'; }
busy() { awk -v cpu="$1" -v d="$DURATION" 'BEGIN { printf "%.0f%%", 100 * cpu / d }'; }
echo
printf '%-12s %12s %14s %16s\n' "server" "queries/s" "CPU 0 busy" "CPU us/query"
printf '%-12s %12.0f %14s %16s\n' "nsd" "$nsd_qps" "$(busy "$nsd_cpu")" "$(per_query "$nsd_cpu" "$nsd_qps")"
printf '%-12s %12.0f %14s %16s\n' "foobar-dns" "$foobar_qps" "$(busy "$foobar_cpu")" "$(per_query "$foobar_cpu" "$foobar_qps")"
echo "ratio foobar-dns / nsd, queries per second: $ratio  (target >= 1.00)"
echo "ratio nsd / foobar-dns, CPU per query:      $(awk -v a="$(per_query "$nsd_cpu" "$nsd_qps")" -v b="$(per_query "$foobar_cpu" "$foobar_qps")" 'BEGIN { printf "%.2f", a / b }')  (above 1.00: foobar-dns spends less per answer)"
echo "foobar-dns RSS: idle $((idle_rss / 1024)) MB ($idle_rss kB), after load $((loaded_rss / 1024)) MB (target idle < 15 MB)"
