# shellcheck shell=bash
# Shared by the benchmarks in bench/. Source it after scripts/lib.sh; it defines functions
# only. `bench_start` sets `work` (a scratch folder), `pids` (the servers' process groups,
# killed on exit) and `binary` (the release build under test).

# bench_start NAME BINARY: the scratch folder, the cleanup on exit, and a release build.
# A server is started with `setsid` and its pid added to `pids`: it is then the id of the
# server's session and process group, which cpu_seconds measures and bench_cleanup kills.
bench_start() {
  work=$(mktemp -d "/tmp/foobar-bench-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  step "building $2 (release)"
  cargo build --release --locked --bin "$2" 2>&1 | tail -n 1
  # shellcheck disable=SC2034 # for the script that sourced this file
  binary="${CARGO_TARGET_DIR:-target}"/release/$2
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

# Figures of the wrk run whose output is $work/NAME.wrk.
rps() { awk '/Requests\/sec/ {print $2}' "$work/$1.wrk"; }
percentile() { to_ms "$(awk -v p="$2%" '$1 == p {print $2}' "$work/$1.wrk")"; }

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
