#!/usr/bin/env bash
# foobar-dns against NSD and Knot DNS 3.2 (Debian's nsd and knot), in the same run, on the same
# zone and the same query mix, over UDP and over TCP (dnsperf -m tcp: one connection, many
# queries in flight on it). Every server pinned to CPU 0 (one worker each: NSD server-count 1,
# Knot one UDP and one TCP worker), dnsperf to CPU 1; each server and protocol measured in
# turn for DURATION seconds, over ROUNDS rounds, each judged by its median round (bench/lib.sh).
# One dnsperf on one core can be the limit: CPU per answer (the server's CPU time over the
# answers of every round) then tells the servers apart.
# Prints queries per second, how busy each server's core was, CPU per answer, the ratios and
# foobar-dns's idle memory (RSS).
#
#   bench/dns.sh                        # 3 rounds of 10 s per server and protocol (~3 min)
#   DURATION=5 ROUNDS=1 bench/dns.sh
#   PROTOCOLS=udp bench/dns.sh          # udp, tcp or both (default "udp tcp")
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10} # not bench/lib.sh's 20
source bench/lib.sh

PROTOCOLS=${PROTOCOLS:-udp tcp}
bench_ports 15301 NSD_PORT FOOBAR_PORT KNOT_PORT

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

# Knot: no rate limiting unless its rrl module is loaded (it is not); the zone read from the
# file, never written back, no journal.
mkdir -p "$work/knot"
cat > "$work/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$KNOT_PORT
    rundir: "$work/knot"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    identity: ""
    version: ""
log:
  - target: "$work/knot.log"
    any: warning
database:
    storage: "$work/knot"
control:
    listen: "$work/knot/knot.sock"
zone:
  - domain: foobar.com
    file: "$work/foobar.com.zone"
    storage: "$work/knot"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
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
    if dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short www.foobar.com A >/dev/null 2>&1 \
       && dig @127.0.0.1 -p "$1" +tcp +time=1 +tries=1 +short www.foobar.com A >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing answers on port $1 over UDP and TCP" >&2; return 1
}

# A server must not start where another one already answers, or we would measure that one.
port_free() { # port
  if dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short www.foobar.com A >/dev/null 2>&1; then
    echo "something already answers DNS on 127.0.0.1:$1; stop it or set NSD_PORT/KNOT_PORT/FOOBAR_PORT" >&2
    exit 1
  fi
}

# Runs dnsperf against PORT: its output in $work/NAME.dnsperf, the figures bench/lib.sh reads
# (rps, requests_done) in $work/NAME.rps and .requests, the server's CPU seconds in .cpu.
run_dnsperf() { # name port protocol sid
  local name=$1 port=$2 protocol=$3 sid=$4 before
  step "dnsperf against $name over $protocol for ${DURATION}s (server on CPU 0, dnsperf on CPU 1)"
  before=$(cpu_seconds "$sid")
  taskset -c 1 dnsperf -m "$protocol" -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l "$DURATION" -T 1 -c 1 -q 200 \
    > "$work/$name.dnsperf" 2>&1
  awk -v a="$(cpu_seconds "$sid")" -v b="$before" 'BEGIN { print a - b }' > "$work/$name.cpu"
  awk '/Queries per second/ {print $4}' "$work/$name.dnsperf" > "$work/$name.rps"
  awk '/Queries completed/ {print $3}' "$work/$name.dnsperf" > "$work/$name.requests"
  awk '/Queries lost/ {print $3}' "$work/$name.dnsperf" > "$work/$name.failed"
  grep -E 'Queries (sent|completed|lost)|Queries per second|Average Latency' "$work/$name.dnsperf" | sed 's/^/    /' >&2
}

port_free "$NSD_PORT"
port_free "$KNOT_PORT"
port_free "$FOOBAR_PORT"
step "starting NSD $(nsd -v 2>&1 | head -n1 | awk '{print $3}'), Knot $(knotd --version | awk '{print $NF}') and foobar-dns, each on CPU 0"
setsid taskset -c 0 nsd -d -c "$work/nsd.conf" > "$work/nsd.out" 2>&1 &
pids+=($!)
nsd_pid=${pids[-1]}
setsid taskset -c 0 knotd -c "$work/knot.conf" > "$work/knot.out" 2>&1 &
pids+=($!)
knot_pid=${pids[-1]}
RUST_LOG=warn setsid taskset -c 0 "$binary" --config "$work/foobar-dns.toml" > "$work/foobar.out" 2>&1 &
pids+=($!)
foobar_pid=${pids[-1]}
wait_answering "$NSD_PORT"
wait_answering "$KNOT_PORT"
wait_answering "$FOOBAR_PORT"
sleep 1 # settled: what it holds before any load is its idle memory
idle_rss=$(rss_kb "$foobar_pid")

servers=(nsd knot foobar-dns)
declare -A port=([nsd]=$NSD_PORT [knot]=$KNOT_PORT [foobar-dns]=$FOOBAR_PORT)
declare -A sid=([nsd]=$nsd_pid [knot]=$knot_pid [foobar-dns]=$foobar_pid)
for round in $(seq 1 "$ROUNDS"); do
  for protocol in $PROTOCOLS; do
    for server in "${servers[@]}"; do
      run_dnsperf "$protocol-$server-$round" "${port[$server]}" "$protocol" "${sid[$server]}"
    done
  done
done
loaded_rss=$(rss_kb "$foobar_pid")

echo
for protocol in $PROTOCOLS; do
  print_rounds "${servers[@]/#/$protocol-}"
done
echo
printf '%-6s %-12s %12s %12s %14s %8s\n' proto server queries/s "CPU 0 busy" "CPU us/answer" lost
for protocol in $PROTOCOLS; do
  for server in "${servers[@]}"; do
    printf '%-6s %-12s %12.0f %12s %14s %8s\n' "$protocol" "$server" "$(rps "$(median_round "$protocol-$server")")" \
      "$(core_busy "$protocol-$server" cpu 1)%" "$(per_request "$protocol-$server")" "$(failed_rounds "$protocol-$server")"
  done
done
echo "(median round of $ROUNDS, ${DURATION}s each; busy, CPU and lost over every round)"
for protocol in $PROTOCOLS; do
  foobar=$(median_round "$protocol-foobar-dns")
  for reference in nsd knot; do
    other=$(median_round "$protocol-$reference")
    printf 'ratio foobar-dns / %-5s %s: queries per second %s (target >= 1.00), CPU per answer %s (target <= 1.00)\n' \
      "$reference," "$protocol" "$(ratio "$(rps "$foobar")" "$(rps "$other")")" \
      "$(ratio "$(per_request "$protocol-foobar-dns")" "$(per_request "$protocol-$reference")")"
  done
done
echo "foobar-dns RSS: idle $((idle_rss / 1024)) MB ($idle_rss kB), after load $((loaded_rss / 1024)) MB (target idle < 15 MB)"
