#!/usr/bin/env bash
# foobar-db-router against a direct connection, in the same run: sysbench oltp_point_select
# and oltp_read_only with server-side prepared statements (--db-ps-mode=auto), DURATION
# seconds each (default 30), straight to the primary, through the router (whose reads go to
# the replica), and, for reference, through HAProxy in `mode tcp` in front of the replica: a
# proxy hop that only copies bytes, the least any proxy can cost on this machine. The three
# are measured in turn over ROUNDS rounds (default 3), each judged by its median round (runs
# minutes apart vary by a quarter here). Prints transactions per second and p95 latency, the
# ratios to direct, the router's and HAProxy's CPU per transaction with the router / HAProxy
# ratios of rate and CPU (issue 17's targets), and the router's memory (RSS) idle and after.
#
# It starts its own MariaDB primary and replica from foobar/mariadb:dev (make images) on a
# private Docker network and removes them at the end. Every client reaches them at their
# container addresses, not through a published port: on 127.0.0.1, Docker's userland port
# proxy would add a hop of its own to every path (it cut direct point selects from about
# 60 000 to 21 000 tps here).
#
# The router runs one worker thread (ROUTER_THREADS), as HAProxy runs `nbthread 1` here.
#
#   bench/router.sh              # 3 rounds of 30 s per target and test
#   DURATION=10 ROUNDS=1 THREADS=8 bench/router.sh
#   TESTS=oltp_point_select ROUTER_THREADS=2 bench/router.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30} # not bench/lib.sh's 20
source bench/lib.sh

THREADS=${THREADS:-4}
TABLE_SIZE=${TABLE_SIZE:-10000}
bench_ports 15405 HAPROXY_PORT
IMAGE=foobar/mariadb:dev
docker image inspect "$IMAGE" >/dev/null 2>&1 \
  || { echo "$IMAGE is missing: run make images first" >&2; exit 1; }

bench_start router foobar-db-router
run_id=foobar-bench-router-$$
remove_databases() {
  docker rm -f "$run_id-primary" "$run_id-replica" >/dev/null 2>&1 || true
  docker network rm "$run_id" >/dev/null 2>&1 || true
}
trap 'bench_cleanup; remove_databases' EXIT

app_password=bench-app-password
db_env=(-e DB_ROOT_PASSWORD=bench-root-password -e DB_REPLICATION_PASSWORD=bench-repl-password
        -e "DB_APP_PASSWORD=$app_password" -e DB_MONITOR_PASSWORD=bench-monitor-password)
step "starting a MariaDB primary and replica ($IMAGE) on network $run_id"
docker network create "$run_id" >/dev/null
docker run -d --name "$run_id-primary" --hostname db-primary --network "$run_id" \
  -e DB_ROLE=primary -e DB_SERVER_ID=1 "${db_env[@]}" "$IMAGE" >/dev/null
docker run -d --name "$run_id-replica" --hostname db-replica --network "$run_id" \
  -e DB_ROLE=replica -e DB_SERVER_ID=2 -e "DB_PRIMARY_HOST=$run_id-primary" \
  "${db_env[@]}" "$IMAGE" >/dev/null

wait_healthy() { # container
  for _ in $(seq 1 360); do
    case "$(docker inspect -f '{{.State.Health.Status}}' "$1")" in
      healthy) return 0 ;;
      unhealthy) docker logs "$1" | tail -n 20 >&2; echo "$1 is unhealthy" >&2; return 1 ;;
    esac
    sleep 0.5
  done
  echo "$1 not healthy within 180 s" >&2; return 1
}
wait_healthy "$run_id-primary"
wait_healthy "$run_id-replica"
address_of() { docker inspect -f "{{(index .NetworkSettings.Networks \"$run_id\").IPAddress}}" "$1"; }
primary=$(address_of "$run_id-primary")
replica=$(address_of "$run_id-replica")

cat > "$work/db-router.toml" <<CONF
[service]
admin_listen = "127.0.0.1:0"
worker_threads = ${ROUTER_THREADS:-1}
[router]
listen = "127.0.0.1:0"
[[users]]
name = "bench"
password = "bench-router-password"
[backends]
primary = "$primary:3306"
replica = "$replica:3306"
user = "foobar"
password = "$app_password"
[monitor]
user = "monitor"
password = "bench-monitor-password"
CONF
step "starting foobar-db-router"
RUST_LOG=warn,foobar_service=info setsid "$binary" --config "$work/db-router.toml" 2> "$work/router.log" &
pids+=($!)
router_pid=${pids[-1]}
router_port=
for _ in $(seq 1 100); do
  router_port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\) listener="mysql".*/\1/p' "$work/router.log")
  [ -n "$router_port" ] && break
  sleep 0.1
done
[ -n "$router_port" ] || { cat "$work/router.log" >&2; echo "the router did not start" >&2; exit 1; }
rss_mb() { awk -v kb="$(rss_kb "$router_pid")" 'BEGIN {printf "%.1f", kb / 1024}'; }
idle_rss=$(rss_mb)

cat > "$work/haproxy.cfg" <<CONF
global
    nbthread 1
defaults
    mode tcp
    timeout connect 1s
    timeout client 120s
    timeout server 120s
frontend mysql
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend replica
backend replica
    server replica $replica:3306
CONF
step "starting HAProxy $(haproxy -v | awk 'NR == 1 {print $3}') (mode tcp, in front of the replica)"
setsid haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
pids+=($!)
haproxy_pid=${pids[-1]}

direct=("--mysql-host=$primary" --mysql-port=3306 --mysql-user=foobar "--mysql-password=$app_password")
routed=(--mysql-host=127.0.0.1 "--mysql-port=$router_port" --mysql-user=bench --mysql-password=bench-router-password)
tcp_hop=(--mysql-host=127.0.0.1 "--mysql-port=$HAPROXY_PORT" --mysql-user=foobar "--mysql-password=$app_password")
common=(--db-driver=mysql --mysql-db=foobar --tables=4 "--table-size=$TABLE_SIZE")

step "sysbench prepare: 4 tables of $TABLE_SIZE rows, on the primary"
sysbench oltp_read_only "${common[@]}" "${direct[@]}" prepare > "$work/prepare.log"
# Both runs must read the same data: wait until the replica has applied all of it.
gtid=$(mariadb --protocol=TCP -h "$primary" -P 3306 -ufoobar "-p$app_password" -N -B \
       -e 'SELECT @@gtid_binlog_pos')
reached=$(mariadb --protocol=TCP -h "$replica" -P 3306 -ufoobar "-p$app_password" -N -B \
          -e "SELECT MASTER_GTID_WAIT('$gtid', 120)")
[ "$reached" = 0 ] || { echo "the replica did not catch up with $gtid" >&2; exit 1; }

declare -A tps p95 cpu
measure() { # name test round target...
  local name=$1 test=$2 round=$3; shift 3
  local run=$name-$test-$round
  step "round $round/$ROUNDS: sysbench $test, $name: $THREADS threads, ${DURATION}s"
  # The proxy's CPU time over the run (cpu_seconds, bench/lib.sh): the router's or HAProxy's
  # (the router's, idle, for direct).
  local sid=$router_pid
  [ "$name" = haproxy-tcp ] && sid=$haproxy_pid
  local before; before=$(cpu_seconds "$sid")
  if ! sysbench "$test" "${common[@]}" "$@" --threads="$THREADS" --time="$DURATION" \
    --db-ps-mode=auto --percentile=95 run > "$work/$run.log" 2>&1; then
    tail -n 20 "$work/$run.log" >&2
    echo "sysbench $test ($name) failed; the router's log ends:" >&2
    tail -n 20 "$work/router.log" >&2
    exit 1
  fi
  local used; used=$(awk -v a="$(cpu_seconds "$sid")" -v b="$before" 'BEGIN { print a - b }')
  tps[$run]=$(awk '/transactions:/ {gsub(/[(]/, "", $3); print $3}' "$work/$run.log")
  local count; count=$(awk '/transactions:/ {print $2}' "$work/$run.log")
  cpu[$run]=$(awk -v t="$used" -v n="$count" -v d="$DURATION" \
    'BEGIN {printf "%.0f%% of a core, %.1f us/txn", 100 * t / d, 1e6 * t / n}')
  p95[$run]=$(awk '/95th percentile:/ {print $3}' "$work/$run.log")
  if ! grep -q 'ignored errors: *0 ' "$work/$run.log"; then
    grep 'ignored errors' "$work/$run.log" >&2
  fi
}
median_run() { # name test: the run (NAME-TEST-ROUND) with the median tps
  local round
  for round in $(seq 1 "$ROUNDS"); do echo "${tps[$1-$2-$round]} $1-$2-$round"; done | median
}
for test in ${TESTS:-oltp_point_select oltp_read_only}; do
  for round in $(seq 1 "$ROUNDS"); do
    measure direct "$test" "$round" "${direct[@]}"
    measure router "$test" "$round" "${routed[@]}"
    measure haproxy-tcp "$test" "$round" "${tcp_hop[@]}"
  done
done
loaded_rss=$(rss_mb)

echo
for test in ${TESTS:-oltp_point_select oltp_read_only}; do
  for name in direct router haproxy-tcp; do
    printf '%-18s %-12s tps by round:' "$test" "$name"
    for round in $(seq 1 "$ROUNDS"); do printf ' %s' "${tps[$name-$test-$round]}"; done
    echo
  done
done
echo
printf '%-18s %11s %11s %8s %11s %8s %9s %9s %9s\n' test "direct tps" "router tps" ratio \
  "haproxy tps" ratio "direct p95" "router p95" "haproxy p95"
for test in ${TESTS:-oltp_point_select oltp_read_only}; do
  d=$(median_run direct "$test") r=$(median_run router "$test") h=$(median_run haproxy-tcp "$test")
  printf '%-18s %11s %11s %8s %11s %8s %9s %9s %9s\n' "$test" "${tps[$d]}" "${tps[$r]}" \
    "$(awk -v d="${tps[$d]}" -v r="${tps[$r]}" 'BEGIN {printf "%.2fx", r / d}')" "${tps[$h]}" \
    "$(awk -v d="${tps[$d]}" -v r="${tps[$h]}" 'BEGIN {printf "%.2fx", r / d}')" \
    "${p95[$d]}" "${p95[$r]}" "${p95[$h]}"
done
echo "(median round of $ROUNDS, ${DURATION}s each, $THREADS threads; p95 in ms; direct = the primary;"
echo " router = foobar-db-router, reads on the replica; haproxy = HAProxy mode tcp to the replica,"
echo " a hop that copies bytes and parses nothing)"
echo
us_per_txn() { sed -E 's/.* ([0-9.]+) us\/txn$/\1/' <<< "$1"; }
for test in ${TESTS:-oltp_point_select oltp_read_only}; do
  r=$(median_run router "$test") h=$(median_run haproxy-tcp "$test")
  echo "CPU during $test (median round): foobar-db-router ${cpu[$r]}; HAProxy ${cpu[$h]}"
  echo "  router / HAProxy: rate $(ratio "${tps[$r]}" "${tps[$h]}") (target >= 1)," \
    "CPU per transaction $(ratio "$(us_per_txn "${cpu[$r]}")" "$(us_per_txn "${cpu[$h]}")") (target < 1)"
done
echo "foobar-db-router RSS: idle ${idle_rss} MB, after the runs ${loaded_rss} MB (target: idle < 15 MB)"
