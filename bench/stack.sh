#!/usr/bin/env bash
# The whole path as a visitor takes it: h2load on the host, HTTPS (HTTP/2) through lb-1's
# published port, to web-a or web-b, through a db-router to the database. Four pages:
#   home       GET /             (the latest posts: a read through a router on the replica)
#   static     GET /assets/site.<hash>.css, the stylesheet the home page links
#   guestbook  GET /guestbook    (a read through a router on the replica)
#   post       POST /guestbook   (a write through a router on the primary; answered 303)
# each for DURATION s with CLIENTS connections of STREAMS streams, in turn, over ROUNDS rounds
# (bench/lib.sh: median round). For each: requests per second, p50, p99 (h2load's log of every
# request), failures (not 2xx or 3xx, or no answer), and each container's CPU per request (its
# cgroup's CPU time, cpuacct or cpu.stat, less what it used per second with no load over IDLE s
# before the runs) and how busy it was, with the busiest hop named.
#
# Two stacks in the same run, each its own compose project (never the user's `foobar`): `new`,
# this checkout's working tree, and `base`, the commit BASE checked out in a git worktree
# (kept with its own cargo target folder in $CARGO_TARGET_DIR/bench-base/REV for the next run),
# both built the same way (cargo on the host, prebuilt binaries, `docker compose build` with image tags of their own:
# foobar-bench/SERVICE:new and :base; the stack's foobar/*:dev images are not touched), up
# together on their own ports and networks, measured in turn, then removed with their volumes.
# The result is the ratio new / base for each page. Before any load it prints each service's
# idle RSS (dns-1, lb-1, web-a, router-a) with its target.
#
#   bench/stack.sh                      # 3 rounds of 20 s per page and stack (~12 min once built)
#   DURATION=5 ROUNDS=1 bench/stack.sh  # a quick look
#   BASE=<rev> bench/stack.sh           # compare with another commit (default: the commit
#                                       # before issue 20's work, f3c1e12)
#   BASE=none bench/stack.sh            # only this checkout, no ratio
#   RUNNING=1 bench/stack.sh            # `new` is the running stack (project foobar, lb-1 on
#                                       # LB1_HTTPS_PORT, default 8443): neither built, started
#                                       # nor stopped here; its guestbook gets the posts
#   CLIENTS=10 STREAMS=100 bench/stack.sh
# Needs Docker; run it while no other benchmark or build uses the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

CLIENTS=${CLIENTS:-10}
STREAMS=${STREAMS:-10}
WARMUP=${WARMUP:-2}
IDLE=${IDLE:-10}
PAGES=${PAGES:-home static guestbook post}
BASE=${BASE:-f3c1e1266c043217246b9b76b3d806d1e4c1c0ed}
RUNNING=${RUNNING:-0}
PROJECT=${PROJECT:-foobar-bench}
# The services started (their dependencies come with them) and the hops measured.
SERVICES=(dns-1 lb-1 lb-2)
HOPS=(lb-1 lb-2 web-a web-b router-a router-b db-primary db-replica)
IMAGES=(dns-1 dns-2 lb-1 lb-2 web-a web-b router-a router-b db-primary db-replica)
declare -A IMAGE_NAME=([dns-1]=dns [dns-2]=dns [lb-1]=balancer [lb-2]=balancer [web-a]=webapp [web-b]=webapp
                       [router-a]=db-router [router-b]=db-router [db-primary]=mariadb [db-replica]=mariadb)
# Each stack's published ports (base = new + 1000) and edge network; the user's stack keeps
# 5353, 8080-8081, 8443-8444, 9100-9101 and 10.153.53.0/24.
declare -A PORT_BASE=([new]=18000 [base]=19000)
declare -A EDGE_NET=([new]=10.153.54 [base]=10.153.55)

bash scripts/install-tools.sh bench
work=$(mktemp -d /tmp/foobar-bench-stack.XXXXXX)
repo=$(pwd)
stacks=(new)
[ "$BASE" = none ] || stacks+=(base)
declare -A TREE=([new]=$repo)
declare -A UP=()

compose() { # stack compose-args...
  local stack=$1 p=${PORT_BASE[$1]}; shift
  if [ "$stack" = new ] && [ "$RUNNING" = 1 ]; then
    docker compose "$@"
    return
  fi
  DNS_PORT=$((p + 53)) DNS2_PORT=$((p + 54)) LB1_HTTP_PORT=$((p + 80)) LB2_HTTP_PORT=$((p + 81)) \
  LB1_HTTPS_PORT=$((p + 443)) LB2_HTTPS_PORT=$((p + 444)) LB1_ADMIN_PORT=$((p + 100)) LB2_ADMIN_PORT=$((p + 101)) \
  FOOBAR_EDGE_NET=${EDGE_NET[$stack]} FOOBAR_BINARIES=prebuilt \
    docker compose -p "$PROJECT-$stack" --project-directory "${TREE[$stack]}" \
      -f "${TREE[$stack]}/docker-compose.yml" -f "$work/images-$stack.yml" "$@"
}
https_port() { # stack
  if [ "$1" = new ] && [ "$RUNNING" = 1 ]; then echo "${LB1_HTTPS_PORT:-8443}"; else echo $((PORT_BASE[$1] + 443)); fi
}

cleanup() {
  local stack
  for stack in "${!UP[@]}"; do
    step "removing the $stack stack (docker compose -p $PROJECT-$stack down --volumes)"
    compose "$stack" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The image tags of a stack: foobar-bench/SERVICE:STACK, so neither build touches foobar/*:dev.
for stack in "${stacks[@]}"; do
  {
    echo "services:"
    for service in "${IMAGES[@]}"; do
      echo "  $service: { image: \"foobar-bench/${IMAGE_NAME[$service]}:$stack\" }"
    done
  } > "$work/images-$stack.yml"
done

# Builds STACK's tree as scripts/build-images.sh does with prebuilt binaries: cargo on the host,
# the binaries copied to the tree's dist/bin/, then `docker compose build` of its images. Each
# tree has its own target folder (cargo judges a workspace member fresh by its files' times,
# so two trees sharing one would mix their builds); the base's is seeded from this one's, so
# only the workspace's own crates compile there.
build_stack() { # stack
  local stack=$1 tree=${TREE[$1]} target="${CARGO_TARGET_DIR:-$repo/target}"
  if [ "$stack" = base ]; then
    if [ ! -d "$tree/target/release" ] && [ -d "$target/release" ]; then
      step "base: seeding $tree/target from $target/release"
      mkdir -p "$tree/target"
      cp -a "$target/release" "$tree/target/"
    fi
    target="$tree/target"
  fi
  step "$stack: cargo build --release ($tree)"
  (cd "$tree" && CARGO_TARGET_DIR="$target" nice -n 19 cargo build --release --locked --bins 2>&1 | tail -n 1)
  mkdir -p "$tree/dist/bin"
  cp "$target/release/foobar-dns" "$target/release/foobar-balancer" "$target/release/foobar-webapp" \
    "$target/release/foobar-db-router" "$tree/dist/bin/"
  [ -s "$tree/secrets/admin_token" ] || (cd "$tree" && bash scripts/secrets.sh)
  step "$stack: docker compose build (log in $work/build-$stack.log)"
  if ! compose "$stack" --progress plain build "${IMAGES[@]}" > "$work/build-$stack.log" 2>&1; then
    tail -n 30 "$work/build-$stack.log" >&2
    echo "docker compose build of the $stack stack failed" >&2
    exit 1
  fi
}

bash scripts/base-images.sh debian:bookworm-slim
if [ "$BASE" != none ]; then
  base_rev=$(git rev-parse --verify "$BASE^{commit}")
  TREE[base]="${CARGO_TARGET_DIR:-$repo/target}/bench-base/$base_rev"
  if [ ! -d "${TREE[base]}" ]; then
    step "base: git worktree of $(git log -1 --format='%h %s' "$base_rev") in ${TREE[base]}"
    mkdir -p "$(dirname "${TREE[base]}")"
    git worktree add --detach "${TREE[base]}" "$base_rev" >/dev/null
  fi
  build_stack base
fi
if [ "$RUNNING" = 1 ]; then
  step "new: the running stack (project foobar), lb-1 on port $(https_port new)"
else
  build_stack new
fi

for stack in "${stacks[@]}"; do
  [ "$stack" = new ] && [ "$RUNNING" = 1 ] && continue
  step "$stack: docker compose up (project $PROJECT-$stack, lb-1 on 127.0.0.1:$(https_port "$stack"); waits for health)"
  UP[$stack]=1
  if ! compose "$stack" up --detach --wait --wait-timeout 300 "${SERVICES[@]}" > "$work/up-$stack.log" 2>&1; then
    cat "$work/up-$stack.log" >&2
    compose "$stack" ps >&2
    echo "the $stack stack did not become healthy" >&2
    exit 1
  fi
done

container_id() { compose "$1" ps -q "$2"; }
# CPU nanoseconds a container has used: its cgroup's (v1 cpuacct, v2 cpu.stat; cgroupfs or
# systemd driver).
cpu_ns() { # container-id
  local f
  for f in "/sys/fs/cgroup/cpuacct/docker/$1/cpuacct.usage" \
           "/sys/fs/cgroup/cpu,cpuacct/docker/$1/cpuacct.usage" \
           "/sys/fs/cgroup/cpuacct/system.slice/docker-$1.scope/cpuacct.usage"; do
    if [ -r "$f" ]; then cat "$f"; return; fi
  done
  for f in "/sys/fs/cgroup/system.slice/docker-$1.scope/cpu.stat" "/sys/fs/cgroup/docker/$1/cpu.stat"; do
    if [ -r "$f" ]; then awk '$1 == "usage_usec" {print $2 * 1000}' "$f"; return; fi
  done
  echo "no cgroup CPU figures found for container $1" >&2; exit 1
}
declare -A CID=()
for stack in "${stacks[@]}"; do
  for hop in "${HOPS[@]}" dns-1; do
    CID[$stack/$hop]=$(docker inspect -f '{{.Id}}' "$(container_id "$stack" "$hop")")
  done
done

# Idle memory: the resident set of each service's process (the container's PID 1).
sleep 5
echo
printf '%-6s %-10s %10s %10s\n' stack service "idle RSS" target
for stack in "${stacks[@]}"; do
  for hop in dns-1 lb-1 web-a router-a; do
    pid=$(docker inspect -f '{{.State.Pid}}' "${CID[$stack/$hop]}")
    target=15; [ "$hop" = web-a ] && target=20
    printf '%-6s %-10s %7.1f MB %7s MB\n' "$stack" "$hop" "$(awk -v k="$(rss_kb "$pid")" 'BEGIN { print k / 1024 }')" "< $target"
  done
done
echo

# What each hop uses with no load (health checks, the routers' monitors, replication), per
# second, over IDLE s: taken off its CPU during each run, so CPU per request is the load's.
step "each container's CPU with no load, for ${IDLE}s"
declare -A IDLE_NS=()
for stack in "${stacks[@]}"; do
  for hop in "${HOPS[@]}"; do IDLE_NS[$stack/$hop]=$(cpu_ns "${CID[$stack/$hop]}"); done
done
idle_start=$(date +%s%N)
sleep "$IDLE"
idle_ns=$(( $(date +%s%N) - idle_start ))
for stack in "${stacks[@]}"; do
  for hop in "${HOPS[@]}"; do
    IDLE_NS[$stack/$hop]=$(( ($(cpu_ns "${CID[$stack/$hop]}") - IDLE_NS[$stack/$hop]) * 1000000000 / idle_ns ))
  done
done

# The stylesheet's name, from the home page (it carries its content's hash).
declare -A URL_STATIC=()
for stack in "${stacks[@]}"; do
  asset=$(curl -fsk "https://127.0.0.1:$(https_port "$stack")/" | grep -o '/assets/site\.[0-9a-f]*\.css' | head -n1)
  [ -n "$asset" ] || { echo "$stack: no stylesheet linked from the home page" >&2; exit 1; }
  URL_STATIC[$stack]=$asset
done
printf 'name=bench&message=%s' "$(head -c 200 /dev/zero | tr '\0' 'm')" > "$work/post.form"

page_args() { # page stack: h2load's arguments for PAGE, into `args`
  local url
  url="https://127.0.0.1:$(https_port "$2")"
  case "$1" in
    home) args=("$url/") ;;
    static) args=("$url${URL_STATIC[$2]}") ;;
    guestbook) args=("$url/guestbook") ;;
    post) args=(-d "$work/post.form" -H "content-type: application/x-www-form-urlencoded" "$url/guestbook") ;;
    *) echo "unknown page '$1' (PAGES: home static guestbook post)" >&2; exit 2 ;;
  esac
}

# One run: h2load's figures (bench/lib.sh) and each hop's CPU nanoseconds in $work/NAME.HOP.
run_page() { # page stack name
  local page=$1 stack=$2 name=$3 hop args=() start elapsed
  page_args "$page" "$stack"
  step "$stack: $page, h2load -c $CLIENTS -m $STREAMS, ${DURATION}s"
  taskset -c 1 h2load -c "$CLIENTS" -m "$STREAMS" -D "$WARMUP" "${args[@]}" > /dev/null 2>&1 || true
  for hop in "${HOPS[@]}"; do cpu_ns "${CID[$stack/$hop]}" > "$work/$name.$hop.before"; done
  start=$(date +%s%N)
  run_h2load "$name" - -c "$CLIENTS" -m "$STREAMS" -D "$DURATION" "${args[@]}"
  elapsed=$(( $(date +%s%N) - start ))
  for hop in "${HOPS[@]}"; do
    awk -v a="$(cpu_ns "${CID[$stack/$hop]}")" -v b="$(cat "$work/$name.$hop.before")" \
      -v idle="${IDLE_NS[$stack/$hop]}" -v t="$elapsed" \
      'BEGIN { d = a - b - idle * t / 1e9; print (d > 0 ? d : 0) }' > "$work/$name.$hop"
  done
}

for round in $(seq 1 "$ROUNDS"); do
  for page in $PAGES; do
    for stack in "${stacks[@]}"; do
      step "round $round of $ROUNDS"
      run_page "$page" "$stack" "$page-$stack-$round"
    done
  done
done

# A hop's CPU over every round of NAME: microseconds per request, and share of a core.
hop_per_request() { # name hop
  local round
  for round in $(seq 1 "$ROUNDS"); do echo "$(cat "$work/$1-$round.$2") $(requests_done "$1-$round")"; done \
    | awk '{ ns += $1; n += $2 } END { if (n > 0) printf "%.0f", ns / 1000 / n; else print "-" }'
}
hop_busy() { core_busy "$1" "$2" 1e9; } # name hop

echo
for page in $PAGES; do
  print_rounds "${stacks[@]/#/$page-}"
done
echo
printf '%-10s %-5s %11s %9s %9s %8s   %s\n' page stack requests/s "p50 ms" "p99 ms" failed "CPU us per request (% of a core) by hop"
for page in $PAGES; do
  for stack in "${stacks[@]}"; do
    run=$(median_round "$page-$stack")
    hops="" top="" top_us=0 busy=0
    for hop in "${HOPS[@]}"; do
      us=$(hop_per_request "$page-$stack" "$hop")
      hops+=" $hop $us ($(hop_busy "$page-$stack" "$hop")%)"
      if [ "$us" != - ] && [ "$us" -gt "$top_us" ]; then top=$hop; top_us=$us; fi
    done
    printf '%-10s %-5s %11.0f %9s %9s %8s  %s\n' "$page" "$stack" "$(rps "$run")" "$(percentile "$run" 50)" \
      "$(percentile "$run" 99)" "$(failed_rounds "$page-$stack")" "$hops"
    if [ -z "$top" ]; then echo "                 busiest hop: none (no request answered)"; continue; fi
    busy=$(hop_busy "$page-$stack" "$top")
    limit="no hop near a full core: the limit is waiting (pools, locks, round trips), not CPU"
    [ "$busy" -ge 80 ] && limit="that core is the limit"
    echo "                 busiest hop: $top, $top_us us CPU per request, $busy% of a core; $limit"
  done
done
echo "(median round of $ROUNDS, ${DURATION}s each, h2load -c $CLIENTS -m $STREAMS on CPU 1; failed and CPU over every round)"
if [ "$BASE" != none ]; then
  echo
  for page in $PAGES; do
    new=$(median_round "$page-new")
    base=$(median_round "$page-base")
    target=">= 10"; [ "$page" = post ] && target=">= 5"; [ "$page" = static ] && target="none"
    printf 'ratio new / base (%s), %-10s requests/s %s (target %s), p99 %s; new p99 %s ms (target < 50)\n' \
      "$(git rev-parse --short "$BASE")" "$page:" "$(ratio "$(rps "$new")" "$(rps "$base")")" "$target" \
      "$(ratio "$(percentile "$new" 99)" "$(percentile "$base" 99)")" "$(percentile "$new" 99)"
  done
fi
