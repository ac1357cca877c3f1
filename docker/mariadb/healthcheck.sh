#!/usr/bin/env bash
# foobar-db-healthcheck: the image's HEALTHCHECK. Exit 0 healthy, 1 not; one line says why.
#
#   primary: answers `SELECT 1` over TCP on 127.0.0.1:3306 (not the socket: this proves the
#            server listens on the network, which is what the other containers use).
#   replica: the same, AND SHOW REPLICA STATUS has Slave_IO_Running=Yes and
#            Slave_SQL_Running=Yes. `Connecting` (primary down or restarting) counts as not
#            running: the HEALTHCHECK's retries (3 x 5 s) absorb a brief reconnect, and a
#            replica that has lost its primary for longer should not be read from.
#            Or: no replication configured at all, a replica the router promoted.
#
# It logs in as root with DB_ROOT_PASSWORD (or DB_ROOT_PASSWORD_FILE): Docker runs it with
# the container's environment. On a replica, root@'%' exists only once replication has
# applied the primary's first transactions, so a replica that has never caught up with its
# primary's setup is not healthy either. The password goes in MYSQL_PWD, which the client
# reads, so it is not on a command line.
set -euo pipefail

pw=${DB_ROOT_PASSWORD:-}
if [ -z "$pw" ] && [ -n "${DB_ROOT_PASSWORD_FILE:-}" ]; then
  pw=$(<"$DB_ROOT_PASSWORD_FILE")
fi

q() {
  MYSQL_PWD=$pw mariadb --protocol=TCP --host=127.0.0.1 --port=3306 --user=root \
    --connect-timeout=3 --batch "$@"
}

if ! out=$(q --skip-column-names -e 'SELECT 1' 2>&1) || [ "$out" != 1 ]; then
  echo "no answer to SELECT 1 over TCP on 127.0.0.1:3306: $out"
  exit 1
fi

if [ "${DB_ROLE:-}" != replica ]; then
  echo "ok: ${DB_ROLE:-primary} answers on 127.0.0.1:3306"
  exit 0
fi

# Vertical output (\G), one "Name: value" line per column; its names are still Slave_*.
if ! status=$(q -e 'SHOW REPLICA STATUS\G' 2>&1); then
  echo "SHOW REPLICA STATUS failed: $status"
  exit 1
fi
# field NAME: the value after "NAME: " (values such as Last_IO_Error hold ": " themselves).
field() { awk -v k="$1" '$1 == k ":" { sub(/^ *[^ ]+: /, ""); print; exit }' <<<"$status"; }
io=$(field Slave_IO_Running)
sql=$(field Slave_SQL_Running)
if [ "$io" = Yes ] && [ "$sql" = Yes ]; then
  echo "ok: replica answers on 127.0.0.1:3306, IO=Yes SQL=Yes, $(field Seconds_Behind_Master) s behind"
  exit 0
fi
# No replication configured: a replica the router promoted (RESET SLAVE ALL) is a primary
# now. Healthy even while read-only: after a restart it stays so until a router makes it
# writable again, and the routers start only once the databases are healthy.
if [ -z "$io" ]; then
  echo "ok: promoted by the router (replication reset), read_only=$(q --skip-column-names \
    -e 'SELECT @@read_only' 2>&1)"
  exit 0
fi
echo "replication not running: Slave_IO_Running=${io:-none} Slave_SQL_Running=${sql:-none}" \
     "$(field Last_IO_Error) $(field Last_SQL_Error)"
exit 1
