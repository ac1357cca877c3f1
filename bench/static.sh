#!/usr/bin/env bash
# foobar-webapp against nginx 1.22 serving the same static folder (webapp/static plus a 4 KB
# file), in the same run: both servers pinned to CPU 0 (measured in turn, in rounds), wrk
# pinned to CPU 1, keep-alive.
# nginx runs as it would in production for static files: one worker, sendfile, tcp_nopush,
# open_file_cache, no access log. Prints requests per second, p50 and p99 for both, how busy
# the server's core was and its CPU time per request, the ratios,
# and foobar-webapp's idle memory (RSS).
#
#   bench/static.sh                    # 3 rounds of 20 s per server, in turn
#   DURATION=10 ROUNDS=5 bench/static.sh
#   CONNECTIONS=100 bench/static.sh    # wrk's open connections (default 50)
#   GUESTBOOK_DATABASE_URL=mysql://foobar:PASSWORD@127.0.0.1:3306/foobar bench/static.sh
#                                      # also the guestbook page (a database read per request)
#                                      # through that URL: a db-router, or a database directly
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

GUESTBOOK_DATABASE_URL=${GUESTBOOK_DATABASE_URL:-}
bench_ports 15501 NGINX_PORT FOOBAR_PORT

bench_start static foobar-webapp

# The folder both serve: the site's static files and a 4 KB page of text.
cp -r webapp/static "$work/www"
head -c 3100 /dev/urandom | base64 -w 76 > "$work/www/4k.html"
truncate -s 4096 "$work/www/4k.html"
file=/4k.html

# nginx_conf (bench/lib.sh) with what nginx does for static files in production.
nginx_conf <<CONF
include /etc/nginx/mime.types;
sendfile on;
tcp_nopush on;
open_file_cache max=1000 inactive=60s;
open_file_cache_valid 60s;
server {
    listen 127.0.0.1:$NGINX_PORT;
    root $work/www;
}
CONF

# The database URL points where nothing listens unless GUESTBOOK_DATABASE_URL is given: static
# files do not need it.
cat > "$work/webapp.toml" <<CONF
[service]
admin_listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:$FOOBAR_PORT"
static_dir = "$work/www"
instance = "bench"
[database]
url = "mysql://foobar@127.0.0.1:1/foobar"
retry_interval = "1s"
CONF

# A run of wrk against PORT and PATH (run_wrk, bench/lib.sh: NAME's figures and the server's
# CPU), which must answer 2xx only.
measure() { # name port path sid
  local name=$1 path=$3
  step "wrk against $name $path for ${DURATION}s, $CONNECTIONS connections (server on CPU 0, wrk on CPU 1)"
  run_wrk "$name" "$4" 2 "http://127.0.0.1:$2$path"
  if grep -q 'Non-2xx' "$work/$name.wrk"; then
    echo "$name answered errors; the figures would not be of $path" >&2; exit 1
  fi
}
# How busy the server's core was, and its CPU time per request: when the machine is shared or
# wrk's core is the limit, CPU per request still tells the servers apart.
busy() { awk -v cpu="$(cat "$work/$1.cpu")" -v d="$DURATION" 'BEGIN { printf "%.0f%%", 100 * cpu / d }'; }
per_request() { awk -v cpu="$(cat "$work/$1.cpu")" -v r="$(rps "$1")" -v d="$DURATION" 'BEGIN { printf "%.1f", cpu * 1e6 / (r * d) }'; }

step "starting nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') and foobar-webapp, both on CPU 0"
setsid taskset -c 0 nginx -c "$work/nginx.conf" > "$work/nginx.out" 2>&1 &
pids+=($!)
RUST_LOG=error setsid taskset -c 0 "$binary" --config "$work/webapp.toml" > "$work/foobar.out" 2>&1 &
pids+=($!)
http_answering "$NGINX_PORT" "$file"
http_answering "$FOOBAR_PORT" "$file"
# Both must serve the same bytes, or the comparison means nothing.
cmp "$work/www$file" <(curl -fs "http://127.0.0.1:$FOOBAR_PORT$file")
idle_rss=$(rss_kb "${pids[1]}")

# In turn, ROUNDS times; each judged by its median round (median_round, bench/lib.sh).
for round in $(seq 1 "$ROUNDS"); do
  measure "nginx-$round" "$NGINX_PORT" "$file" "${pids[0]}"
  measure "foobar-webapp-$round" "$FOOBAR_PORT" "$file" "${pids[1]}"
done
loaded_rss=$(rss_kb "${pids[1]}")
for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done

nginx=$(median_round nginx)
foobar=$(median_round foobar-webapp)

echo
print_rounds nginx foobar-webapp
printf '%-14s %12s %10s %10s %12s %14s\n' "server" "requests/s" "p50 ms" "p99 ms" "CPU 0 busy" "CPU us/request"
for run in "$nginx" "$foobar"; do
  printf '%-14s %12.0f %10s %10s %12s %14s\n' "${run%-*}" "$(rps "$run")" "$(percentile "$run" 50)" \
    "$(percentile "$run" 99)" "$(busy "$run")" "$(per_request "$run")"
done
echo "(median round of $ROUNDS, ${DURATION}s each)"
echo "ratio foobar-webapp / nginx, requests per second: $(awk -v a="$(rps "$foobar")" -v b="$(rps "$nginx")" 'BEGIN { printf "%.2f", a / b }')  (target >= 1.00)"
echo "ratio nginx / foobar-webapp, CPU per request:     $(awk -v a="$(per_request "$nginx")" -v b="$(per_request "$foobar")" 'BEGIN { printf "%.2f", a / b }')  (above 1.00: foobar-webapp spends less per request)"
echo "foobar-webapp RSS: idle $((idle_rss / 1024)) MB ($idle_rss kB), after load $((loaded_rss / 1024)) MB (target idle < 20 MB)"

if [ -n "$GUESTBOOK_DATABASE_URL" ]; then
  step "starting foobar-webapp on CPU 0 with the guestbook's database"
  DATABASE_URL=$GUESTBOOK_DATABASE_URL RUST_LOG=error setsid taskset -c 0 "$binary" \
    --config "$work/webapp.toml" > "$work/foobar-db.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    if curl -fs -o /dev/null "http://127.0.0.1:$FOOBAR_PORT/guestbook"; then break; fi
    sleep 0.1
  done
  measure guestbook "$FOOBAR_PORT" /guestbook "${pids[-1]}"
  echo
  printf '%-14s %12s %10s %10s %12s %14s\n' "page" "requests/s" "p50 ms" "p99 ms" "CPU 0 busy" "CPU us/request"
  printf '%-14s %12.0f %10s %10s %12s %14s\n' "/guestbook" "$(rps guestbook)" "$(percentile guestbook 50)" \
    "$(percentile guestbook 99)" "$(busy guestbook)" "$(per_request guestbook)"
fi
