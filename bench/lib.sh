# Shared by the benchmarks in bench/. Source it after scripts/lib.sh; it defines functions
# only. `bench_start` sets `work` (a scratch folder), `pids` (the servers' process groups,
# killed on exit) and `binary` (the release build under test).

# bench_start NAME BINARY: the scratch folder, the cleanup on exit, and a release build.
bench_start() {
  work=$(mktemp -d "/tmp/foobar-bench-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  step "building $2 (release)"
  cargo build --release --locked --bin "$2" 2>&1 | tail -n 1
  binary=target/release/$2
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
