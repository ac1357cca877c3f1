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

DURATION=${DURATION:-30}
NSD_PORT=${NSD_PORT:-15301}
FOOBAR_PORT=${FOOBAR_PORT:-15302}
bash scripts/install-tools.sh bench

work=$(mktemp -d /tmp/foobar-bench-dns.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

step "building foobar-dns (release)"
cargo build --release --locked --bin foobar-dns 2>&1 | tail -n 1
binary=target/release/foobar-dns

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

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

run_dnsperf() { # name port -> prints qps
  local name=$1 port=$2
  step "dnsperf against $name for ${DURATION}s (server on CPU 0, dnsperf on CPU 1)" >&2
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l "$DURATION" -T 1 -c 1 -q 200 \
    > "$work/$name.dnsperf" 2>&1
  grep -E 'Queries (sent|completed|lost)|Queries per second|Average Latency' "$work/$name.dnsperf" | sed 's/^/    /' >&2
  awk '/Queries per second/ {print $4}' "$work/$name.dnsperf"
}

step "starting NSD $(nsd -v 2>&1 | head -n1 | awk '{print $3}') on CPU 0"
taskset -c 0 nsd -d -c "$work/nsd.conf" > "$work/nsd.out" 2>&1 &
pids+=($!)
wait_answering "$NSD_PORT"
nsd_qps=$(run_dnsperf nsd "$NSD_PORT")
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

step "starting foobar-dns on CPU 0"
RUST_LOG=warn taskset -c 0 "$binary" --config "$work/foobar-dns.toml" > "$work/foobar.out" 2>&1 &
pids+=($!)
wait_answering "$FOOBAR_PORT"
sleep 1
idle_rss=$(rss_kb "${pids[1]}")
foobar_qps=$(run_dnsperf foobar-dns "$FOOBAR_PORT")
loaded_rss=$(rss_kb "${pids[1]}")

ratio=$(awk -v a="$foobar_qps" -v b="$nsd_qps" 'BEGIN { printf "%.2f", a / b }')
echo
printf '%-12s %14s\n' "server" "queries/s"
printf '%-12s %14.0f\n' "nsd" "$nsd_qps" "foobar-dns" "$foobar_qps"
echo "ratio foobar-dns / nsd: $ratio  (target >= 1.00)"
echo "foobar-dns RSS: idle $((idle_rss / 1024)) MB ($idle_rss kB), after load $((loaded_rss / 1024)) MB (target idle < 15 MB)"
