#!/usr/bin/env bash
# foobar-db-entrypoint: makes this container a MariaDB replication primary or replica, from
# the environment, then execs mariadbd (as PID 1, so `docker stop`'s SIGTERM reaches it).
#
# Environment:
#   DB_ROLE                  primary | replica (required)
#   DB_SERVER_ID             positive integer, unique per node (required)
#   DB_ROOT_PASSWORD         root's password (required on both roles: the healthcheck logs in
#                            as root over TCP; on a replica root arrives by replication)
#   DB_REPLICATION_USER      default repl
#   DB_REPLICATION_PASSWORD  required on both roles (primary: creates the user; replica:
#                            logs in to the primary with it)
#   DB_APP_USER              default foobar     (primary only: created there, replicated)
#   DB_APP_PASSWORD          required on the primary
#   DB_APP_DATABASE          default foobar     (primary only)
#   DB_MONITOR_USER          default monitor    (primary only)
#   DB_MONITOR_PASSWORD      optional, primary only: when set, the first start creates the
#                            account foobar-db-router's monitor uses to watch the nodes and
#                            fail over (least privileges: see first_start below)
#   DB_PRIMARY_HOST          replica only, required there
#   DB_PRIMARY_PORT          replica only, default 3306
#   DB_REPORT_HOST           default: this container's host name. The name other nodes reach
#                            this one by (report_host): the router points replication at it
#                            when it promotes this node or rejoins another one to it
#   DB_SEMI_SYNC_TIMEOUT_MS  default 1000: how long a primary's commit waits for a replica's
#                            ack before it falls back to asynchronous replication. Low, so a
#                            replica that dies without closing its connection stalls writes
#                            for 1 s once, not 10 s (the server's default); semi-sync comes
#                            back by itself when a replica has caught up. (A replica that
#                            disconnects cleanly stalls nothing: wait_no_slave=OFF below.)
#   Each password may instead come from a file, the Docker secrets convention: X_FILE=path
#   (e.g. DB_ROOT_PASSWORD_FILE=/run/secrets/db_root). Setting both X and X_FILE is an error.
#
# First start (empty data directory), both roles: mariadb-install-db, then a temporary
# server on the socket only (no TCP, so nothing connects to a half-made node and the
# healthcheck fails), then
#   primary: root's password, the replication user, the app database and app user. These
#            run with the binary log ON, so they get GTIDs and a new replica replays them.
#   replica: only CHANGE MASTER TO the primary with GTID. It creates no user or database of
#            its own: starting from an empty gtid_slave_pos it replays the primary's binary
#            log from its very first event, so the users and database arrive by replication
#            and both nodes hold the same GTIDs (which gtid_strict_mode needs for a later
#            promotion). This needs the primary to still have its first binlog file: Debian
#            sets expire_logs_days=10, so a replica made later than that from an empty data
#            directory needs a copy of the primary's data instead (mariadb-backup).
# then the temporary server is shut down and the real one exec'd.
#
# Later starts: the config file is written again from the environment and mariadbd exec'd.
# Passwords and users are not changed then, nor is a replica's CHANGE MASTER. After a
# failover the router, not DB_ROLE, decides each node's role (the epoch recorded in
# foobar_router.promotion), so a later start never makes a node writable that may not be:
#   - a data directory with replication configured (master.info: a replica, or an old
#     primary the router rejoined to the new one) starts read_only=ON and replicating,
#     whatever DB_ROLE says;
#   - otherwise DB_ROLE=primary starts read_only=OFF with no replication, DB_ROLE=replica
#     read_only=ON. A promoted replica (replication reset) thus restarts read-only and the
#     router makes it writable again; an old primary that restarts writable after a failover
#     is fenced (read_only=ON) by the router, which knows the newer epoch.
# (DB_MONITOR_PASSWORD given for the first time to an existing data directory creates
# nothing: remove the volumes, `make clean`, to get the monitor account.)
#
# Everything runs as the OS user mysql. mariadb-install-db (with its default
# --auth-root-authentication-method=socket, 10.4 and later) creates two all-privilege
# accounts with no password that only the matching OS user can use, through the unix socket:
# root@localhost (OS root) and mysql@localhost (OS mysql, the --user given). This script
# administers the server as mysql@localhost, on both roles, without any password. (The
# method `normal` would instead create root accounts with an EMPTY password, also reachable
# over TCP from 127.0.0.1, and on a replica nothing would ever replace them.)
#
# Arguments: options for mariadbd (`docker run IMAGE --max-connections=500`); a first
# argument that is not an option is run instead (`docker run -it IMAGE bash`).
set -euo pipefail

readonly DATADIR=/var/lib/mysql
readonly SOCKET=/run/mysqld/mysqld.sock
readonly CONF=/etc/mysql/mariadb.conf.d/90-foobar.cnf
# Written last in a first start: a data directory without it was never finished.
readonly MARKER=$DATADIR/.foobar-initialised

log() { printf 'foobar-db: %s\n' "$*" >&2; }
# Configuration errors exit 2; anything else that goes wrong, 1.
die() { local code=$1; shift; printf 'foobar-db: error: %s\n' "$*" >&2; exit "$code"; }

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

# --- The environment ------------------------------------------------------------------------

# file_env VAR [DEFAULT]: VAR from VAR, or from the file named by VAR_FILE, or DEFAULT.
# $(<file) drops trailing newlines, as a secrets file written with `echo` has one.
file_env() {
  local var=$1 default=${2:-} file_var="${1}_FILE"
  local value=${!var:-} file=${!file_var:-}
  if [ -n "$value" ] && [ -n "$file" ]; then
    die 2 "both $var and $file_var are set; set only one"
  fi
  if [ -n "$file" ]; then
    [ -r "$file" ] || die 2 "$file_var=$file: no such file, or not readable by $(id -un)"
    value=$(<"$file")
  fi
  printf -v "$var" '%s' "${value:-$default}"
  unset "$file_var"
}

require() { [ -n "${!1}" ] || die 2 "$1 (or ${1}_FILE) is required for DB_ROLE=$DB_ROLE"; }

# User and database names go into SQL unquoted by anything but backquotes/quotes below:
# keep them to plain identifiers rather than escape them.
check_name() {
  [[ ${!1} =~ ^[A-Za-z0-9_]{1,64}$ ]] || die 2 "$1='${!1}': use 1-64 letters, digits or _"
}

check_uint() {  # check_uint VAR MIN MAX
  if ! [[ ${!1} =~ ^(0|[1-9][0-9]{0,9})$ ]] || [ "${!1}" -lt "$2" ] || [ "${!1}" -gt "$3" ]; then
    die 2 "$1='${!1}': must be an integer from $2 to $3"
  fi
}

DB_ROLE=${DB_ROLE:-}
case "$DB_ROLE" in
  primary|replica) ;;
  '') die 2 "DB_ROLE is not set: set it to primary or replica" ;;
  *)  die 2 "DB_ROLE='$DB_ROLE': must be primary or replica" ;;
esac

DB_SERVER_ID=${DB_SERVER_ID:-}
[ -n "$DB_SERVER_ID" ] || die 2 "DB_SERVER_ID is not set: a positive integer, unique per node"
check_uint DB_SERVER_ID 1 4294967295
DB_SEMI_SYNC_TIMEOUT_MS=${DB_SEMI_SYNC_TIMEOUT_MS:-1000}
check_uint DB_SEMI_SYNC_TIMEOUT_MS 0 4294967295

file_env DB_ROOT_PASSWORD
file_env DB_REPLICATION_PASSWORD
file_env DB_APP_PASSWORD
DB_REPLICATION_USER=${DB_REPLICATION_USER:-repl}
DB_APP_USER=${DB_APP_USER:-foobar}
DB_APP_DATABASE=${DB_APP_DATABASE:-foobar}
file_env DB_MONITOR_PASSWORD
DB_MONITOR_USER=${DB_MONITOR_USER:-monitor}
check_name DB_MONITOR_USER
check_name DB_REPLICATION_USER
check_name DB_APP_USER
check_name DB_APP_DATABASE
require DB_ROOT_PASSWORD
require DB_REPLICATION_PASSWORD

if [ "$DB_ROLE" = primary ]; then
  require DB_APP_PASSWORD
else
  DB_PRIMARY_HOST=${DB_PRIMARY_HOST:-}
  [ -n "$DB_PRIMARY_HOST" ] || die 2 "DB_PRIMARY_HOST is required for DB_ROLE=replica"
  [[ $DB_PRIMARY_HOST =~ ^[A-Za-z0-9_.:-]+$ ]] \
    || die 2 "DB_PRIMARY_HOST='$DB_PRIMARY_HOST': not a host name or address"
  DB_PRIMARY_PORT=${DB_PRIMARY_PORT:-3306}
  check_uint DB_PRIMARY_PORT 1 65535
fi
DB_REPORT_HOST=${DB_REPORT_HOST:-$(hostname)}

# --- A rebuild the router asked for ---------------------------------------------------------

# The router writes "HOST PORT" here (SELECT ... INTO OUTFILE: this is the server's
# secure_file_priv, the only place it may write) and shuts the server down, when this node
# is a fenced old primary whose only errant transactions no router acknowledged (see
# db-router/src/topology/rebuild.rs for when it does). The restart policy starts the
# container again, and this start makes it a replica of HOST:PORT from empty, as a first
# start does; the old data directory is moved aside on the same volume, never deleted.
# Files of this image's own inside the volume live under .foobar (ignore_db_dirs below, so
# the server does not take it for a database).
readonly REQUESTS=$DATADIR/.foobar/requests
mkdir -p "$REQUESTS"
if [ -f "$REQUESTS/rebuild" ]; then
  read -r source_host source_port _ < "$REQUESTS/rebuild" || true
  if ! [[ ${source_host:-} =~ ^[A-Za-z0-9_.-]{1,253}$ ]] || ! [[ ${source_port:-} =~ ^[0-9]{1,5}$ ]]; then
    die 1 "$REQUESTS/rebuild does not name a primary as 'HOST PORT': remove it to start as before"
  fi
  aside=$DATADIR/.foobar/set-aside-$(date -u +%Y%m%dT%H%M%SZ)
  log "rebuild requested by the router: moving this node's data to $aside (kept, with its" \
      "errant transactions) and making it a replica of ${source_host}:${source_port}"
  mkdir "$aside"
  find "$DATADIR" -mindepth 1 -maxdepth 1 ! -name .foobar -exec mv -t "$aside" -- {} +
  DB_ROLE=replica DB_PRIMARY_HOST=$source_host DB_PRIMARY_PORT=$source_port
  rebuilding=yes
else
  rebuilding=no
fi
[[ $DB_REPORT_HOST =~ ^[A-Za-z0-9_.-]{1,60}$ ]] \
  || die 2 "DB_REPORT_HOST='$DB_REPORT_HOST': not a host name or address"

# --- The config file ------------------------------------------------------------------------

# Written at every start, so the environment always wins. Read after Debian's 50-server.cnf
# (which sets bind-address=127.0.0.1 and the utf8mb4 defaults), so these override it.
# Both nodes run the semi-sync master AND slave side, so either can be promoted as it is:
# the master side only acts on a node that has replicas connected, the slave side only on a
# node that replicates.
# master.info exists while replication is configured (RESET SLAVE ALL removes it).
replicating=no
if [ -f "$MARKER" ] && [ -f "$DATADIR/master.info" ]; then replicating=yes; fi
if [ "$DB_ROLE" = primary ] && [ "$replicating" = no ]; then read_only=OFF; else read_only=ON; fi
cat > "$CONF" <<EOF
# Generated by foobar-db-entrypoint at every start, from the environment: edits are lost.
[mariadbd]
server_id                    = $DB_SERVER_ID
bind_address                 = 0.0.0.0
# How the other nodes reach this one: the router reads it to point replication here.
report_host                  = $DB_REPORT_HOST
# Grants use IP addresses and %, never host names: no DNS lookup per connection.
skip_name_resolve

# Binary log, relay log: names fixed (not from the host name, which is the container id and
# changes when the container is recreated) and inside the data volume.
log_bin                      = mysql-bin
binlog_format                = ROW
log_slave_updates            = ON
relay_log                    = relay-bin
gtid_strict_mode             = ON
# Apply replicated transactions in parallel (optimistically: in parallel, committed in the
# primary's order, a conflicting one rolled back and retried). Catching up is what a new or
# rebuilt replica does first, and a rebuilt old primary must be redundant again soon.
# Measured on this machine, a replica made from empty catching up on 16,000 one-row
# transactions: 44.7 s applied one at a time, 12.7 s with these (each its own fsync before,
# group-committed now). The order of commits, and so every GTID position, is unchanged.
slave_parallel_threads       = 4
slave_parallel_mode          = optimistic

rpl_semi_sync_master_enabled = ON
rpl_semi_sync_slave_enabled  = ON
rpl_semi_sync_master_timeout = $DB_SEMI_SYNC_TIMEOUT_MS
# Lossless: a commit is made visible and acknowledged only after a replica has the
# transaction in its relay log (the default, AFTER_COMMIT, lets other sessions see it and
# a crash lose it). The replica then holds every write a client saw acknowledged, and the
# router promotes it only once it has applied its whole relay log.
rpl_semi_sync_master_wait_point = AFTER_SYNC
# A primary that vanishes without closing its connections (frozen, power loss, a dropped
# link) is noticed by the replica within this, not the default 60 s: the router fails over
# only once the replica has lost its primary too, so this bounds a frozen primary's write
# outage (about 1 s to notice + this + the promotion: the target is 5 s). The primary
# sends a heartbeat every quarter second (MASTER_HEARTBEAT_PERIOD, set with the replication)
# while idle, so a live link never goes quiet this long. (A killed container closes its connections: the
# replica sees the loss at once, measured within 50 ms.)
slave_net_timeout            = 1
# With no semi-sync replica connected, commit without waiting (the server's default, ON,
# waits the timeout once, then falls back): a replica with no replica of its own would
# otherwise stall its own SQL thread, a primary whose replica is down its first commit.
rpl_semi_sync_master_wait_no_slave = OFF

# Where the router may leave a request for this script (above), and nowhere else: FILE
# (which the monitor account has, for that) reads and writes only here.
secure_file_priv             = $REQUESTS
ignore_db_dirs               = .foobar

# A replica takes writes only from replication (and accounts with READ_ONLY ADMIN: root).
read_only                    = $read_only
EOF
if [ "$DB_ROLE" = primary ] && [ "$replicating" = no ]; then
  # A primary never replicates on its own (see "Later starts" above).
  echo "skip_slave_start" >> "$CONF"
fi
cat >> "$CONF" <<'EOF'

# The server's default list, plus last_gtid: a client (the db-router) learns the GTID of
# its last write, and can wait for a replica to have it before reading there.
session_track_system_variables = autocommit,character_set_client,character_set_connection,character_set_results,time_zone,last_gtid
character_set_server         = utf8mb4
EOF

# --- First start ----------------------------------------------------------------------------

temp_pid=
# If the first start fails half-way (or is stopped), do not leave the temporary server
# running: it would keep the container alive with a data directory that is not finished.
stop_temp_server() {
  if [ -n "$temp_pid" ] && kill -0 "$temp_pid" 2>/dev/null; then
    kill -TERM "$temp_pid" 2>/dev/null || true
    wait "$temp_pid" 2>/dev/null || true
  fi
}

# A quoted SQL string literal, backslashes and quotes escaped: right for the default
# sql_mode (no NO_BACKSLASH_ESCAPES), which the temporary server has.
sql_str() {
  local s=${1//\\/\\\\}
  s=${s//\'/\\\'}
  printf "'%s'" "$s"
}

# The client as mysql@localhost over the socket: unix_socket authentication, no password.
# SQL goes on stdin, so no password is ever on a command line (ps shows those).
sql() { mariadb --protocol=SOCKET --socket="$SOCKET" --user=mysql --batch --skip-column-names "$@"; }

first_start() {
  if [ -d "$DATADIR/mysql" ]; then
    die 1 "$DATADIR holds a data directory whose first start did not finish ($MARKER is" \
          "missing); remove the volume and start again"
  fi

  # bash as PID 1 ignores SIGTERM unless it traps it: without this, `docker stop` during a
  # first start would wait for its timeout and then kill everything.
  trap stop_temp_server EXIT
  trap 'log "stopped during first start"; exit 143' TERM INT

  log "initialising data directory $DATADIR"
  local out
  # --skip-test-db: no test database, and so none of its anonymous accounts either.
  # The binary log is off in mariadbd --bootstrap: none of this gets a GTID, which is right,
  # since every node runs it for itself.
  if ! out=$(mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
               --auth-root-authentication-method=socket 2>&1); then
    printf '%s\n' "$out" >&2
    die 1 "mariadb-install-db failed"
  fi

  log "starting a temporary server (socket only)"
  # No TCP; no replication; no semi-sync wait (no replica is connected yet: the primary's
  # first commit would otherwise wait the whole timeout).
  mariadbd --skip-networking --socket="$SOCKET" --skip-slave-start \
           --rpl-semi-sync-master-enabled=OFF &
  temp_pid=$!

  # Usually up in a second; 180 s for a slow disk (InnoDB creates its files on first start).
  local deadline=$((SECONDS + 180))
  until sql -e 'SELECT 1' >/dev/null 2>&1; do
    kill -0 "$temp_pid" 2>/dev/null || die 1 "the temporary server exited during startup"
    [ "$SECONDS" -lt "$deadline" ] || die 1 "the temporary server did not answer within 180 s"
    sleep 0.2
  done

  # Node-local cleanup, kept out of the binary log: mariadb-install-db grants a proxy
  # privilege to mysql@<host name>, here the container id, which no login can match with
  # skip_name_resolve (the server warns about it at every start).
  sql <<'EOF'
SET SESSION sql_log_bin = 0;
DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';
FLUSH PRIVILEGES;
EOF

  if [ "$DB_ROLE" = primary ]; then
    log "primary: creating root@%, ${DB_REPLICATION_USER}@%, database ${DB_APP_DATABASE}," \
        "${DB_APP_USER}@%"
    # With the binary log on (no sql_log_bin=0): these get GTIDs, and a replica replays them
    # from the start. The passwords are hashed first, and only the hashes go into these
    # statements, so the binary logs (kept for days, shipped to replicas) hold no password.
    local root_hash repl_hash app_hash
    root_hash=$(sql <<<"SELECT PASSWORD($(sql_str "$DB_ROOT_PASSWORD"));")
    repl_hash=$(sql <<<"SELECT PASSWORD($(sql_str "$DB_REPLICATION_PASSWORD"));")
    app_hash=$(sql <<<"SELECT PASSWORD($(sql_str "$DB_APP_PASSWORD"));")
    # root@localhost keeps its socket login for OS root and gets the password as well.
    # REPLICA MONITOR (10.5.9 and later) lets the replication user run SHOW REPLICA STATUS,
    # BINLOG MONITOR (formerly REPLICATION CLIENT) SHOW MASTER STATUS / SHOW BINLOG EVENTS:
    # tools that check or switch over replication use them; streaming needs REPLICATION SLAVE.
    sql <<EOF
ALTER USER 'root'@'localhost'
  IDENTIFIED VIA unix_socket OR mysql_native_password USING '$root_hash';
CREATE USER 'root'@'%' IDENTIFIED BY PASSWORD '$root_hash';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
CREATE USER '$DB_REPLICATION_USER'@'%' IDENTIFIED BY PASSWORD '$repl_hash';
GRANT REPLICATION SLAVE, BINLOG MONITOR, REPLICA MONITOR ON *.* TO '$DB_REPLICATION_USER'@'%';
CREATE DATABASE \`$DB_APP_DATABASE\` CHARACTER SET utf8mb4;
CREATE USER '$DB_APP_USER'@'%' IDENTIFIED BY PASSWORD '$app_hash';
GRANT ALL PRIVILEGES ON \`$DB_APP_DATABASE\`.* TO '$DB_APP_USER'@'%';
EOF
    # The router's record of who is primary: one row per promotion, the highest epoch wins.
    # Epoch 0 is this first primary. Replicated like the rest, so every node carries the
    # history, and a router that reads a higher epoch on another node trusts that one.
    sql <<EOF
CREATE DATABASE foobar_router CHARACTER SET utf8mb4;
CREATE TABLE foobar_router.promotion (
  epoch       BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  server_id   INT UNSIGNED NOT NULL,
  host        VARCHAR(255) NOT NULL,
  promoted_by VARCHAR(255) NOT NULL,
  promoted_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
INSERT INTO foobar_router.promotion (epoch, server_id, host, promoted_by)
  VALUES (0, $DB_SERVER_ID, '$DB_REPORT_HOST:3306', 'foobar-db-entrypoint');
-- A fence mark: the record of the primary that replaced this node, left here by the router
-- that fenced it, outside the binary log (never replicated). A router that starts while the
-- primary is down and sees only this node reads it and does not make the node the writer.
-- fenced_pos: the node's gtid_binlog_pos once it was read-only; a write after it was made
-- by hand and keeps the node from being rebuilt by itself.
CREATE TABLE foobar_router.fence (
  epoch       BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  server_id   INT UNSIGNED NOT NULL,
  host        VARCHAR(255) NOT NULL,
  fenced_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  fenced_pos  VARCHAR(4096) NULL
);
EOF
    if [ -n "$DB_MONITOR_PASSWORD" ]; then
      # The router's monitor: exactly what watching and failing over needs, on MariaDB 10.11.
      #   REPLICA MONITOR          SHOW REPLICA STATUS
      #   READ_ONLY ADMIN          SET GLOBAL read_only (promote, fence), and writing the
      #                            promotion record while the node is still read-only
      #   REPLICATION SLAVE ADMIN  STOP/START SLAVE, CHANGE MASTER TO,
      #                            SET GLOBAL gtid_slave_pos (rejoin)
      #   RELOAD                   RESET SLAVE ALL (10.11 asks for RELOAD there, not for
      #                            REPLICATION SLAVE ADMIN)
      #   PROCESS, CONNECTION ADMIN  list and KILL the app account's connections on a node
      #                            it fences, so open sessions cannot keep writing there
      #   SELECT, INSERT, UPDATE on foobar_router.*  the promotion record and the fence
      #                            mark (with the position the node was fenced at)
      #   BINLOG ADMIN             SET SESSION sql_log_bin=0 for the fence mark, which must
      #                            not replicate (it would be a transaction the primary lacks)
      #   BINLOG MONITOR           SHOW BINARY LOGS: whether the primary's log still starts
      #                            at the beginning, before a rebuild replays it
      #   FILE, SHUTDOWN           a rebuild request (INTO OUTFILE, only into
      #                            secure_file_priv, $REQUESTS) and the shutdown after it
      # The app account has none of these (only its own database): read_only stops it.
      log "primary: creating ${DB_MONITOR_USER}@% for foobar-db-router's monitor"
      local monitor_hash
      monitor_hash=$(sql <<<"SELECT PASSWORD($(sql_str "$DB_MONITOR_PASSWORD"));")
      sql <<EOF
CREATE USER '$DB_MONITOR_USER'@'%' IDENTIFIED BY PASSWORD '$monitor_hash';
GRANT REPLICA MONITOR, READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, RELOAD, PROCESS,
  CONNECTION ADMIN, BINLOG ADMIN, BINLOG MONITOR, FILE, SHUTDOWN ON *.* TO '$DB_MONITOR_USER'@'%';
GRANT SELECT, INSERT, UPDATE ON foobar_router.* TO '$DB_MONITOR_USER'@'%';
EOF
    else
      log "primary: DB_MONITOR_PASSWORD not set: no monitor account (the router cannot fail over)"
    fi
  else
    log "replica of ${DB_PRIMARY_HOST}:${DB_PRIMARY_PORT}: replaying its binary log from the start"
    # MASTER_USE_GTID=slave_pos with an empty gtid_slave_pos: from the primary's first event.
    # MASTER_CONNECT_RETRY=1: a primary that is not up yet (or restarts) is retried every
    # second, 100000 times (master_retry_count), so the containers can start in any order.
    # MASTER_HEARTBEAT_PERIOD=0.25: an idle primary still sends something four times a second,
    # well inside slave_net_timeout (1 s, the least it takes), which a frozen one exceeds.
    # Replication starts with the real server (no skip_slave_start on a replica).
    sql <<EOF
CHANGE MASTER TO
  MASTER_HOST=$(sql_str "$DB_PRIMARY_HOST"),
  MASTER_PORT=$DB_PRIMARY_PORT,
  MASTER_USER='$DB_REPLICATION_USER',
  MASTER_PASSWORD=$(sql_str "$DB_REPLICATION_PASSWORD"),
  MASTER_USE_GTID=slave_pos,
  MASTER_CONNECT_RETRY=1,
  MASTER_HEARTBEAT_PERIOD=0.25;
EOF
  fi

  log "stopping the temporary server"
  mariadb-admin --socket="$SOCKET" --user=mysql shutdown
  wait "$temp_pid" || die 1 "the temporary server did not shut down cleanly"
  temp_pid=
  trap - EXIT TERM INT

  touch "$MARKER"
  log "data directory ready"
}

if [ -f "$MARKER" ]; then
  log "data directory $DATADIR already initialised"
else
  first_start
fi
if [ "$rebuilding" = yes ]; then
  rm -f "$REQUESTS/rebuild"
  log "rebuilt: a replica of ${DB_PRIMARY_HOST}:${DB_PRIMARY_PORT}, replaying its binary log"
fi

if [ "$DB_ROLE" = primary ] && [ "$replicating" = yes ]; then
  log "DB_ROLE=primary, but replication is configured (the router rejoined this node as a" \
      "replica after a failover): starting as a replica (server_id=$DB_SERVER_ID, read_only=ON)"
elif [ "$DB_ROLE" = primary ]; then
  log "starting as primary (server_id=$DB_SERVER_ID, read_only=OFF)"
elif [ ! -f "$DATADIR/master.info" ]; then
  log "DB_ROLE=replica, but replication was reset (the router promoted this node): starting" \
      "read_only=ON until the router, which knows the epoch, makes it writable again"
else
  log "starting as replica of ${DB_PRIMARY_HOST}:${DB_PRIMARY_PORT} (server_id=$DB_SERVER_ID," \
      "read_only=ON)"
fi

# A replica whose primary died reconnects every second (MASTER_CONNECT_RETRY=1), and each
# attempt looks the primary's name up again. A dead container's name is unknown to Docker's
# resolver, which on an internal network (compose's `data`) has no upstream to say so: with
# glibc's defaults (5 s, 2 attempts) the lookup hangs 10 s, and the STOP SLAVE of a
# promotion waits for it (measured: writes failed for 22 s after a SIGKILL). One attempt of
# 1 s bounds that wait. The server resolves no other names (skip_name_resolve), and a
# connected replica none at all; a lookup that gives up is one failed attempt, retried a
# second later, and changes nothing about what is replicated or when the router promotes
# (that still needs the replica's IO thread to have lost the primary).
export RES_OPTIONS="timeout:1 attempts:1"

# The server needs none of the secrets; keep them out of its environment (/proc/1/environ).
# (The healthcheck runs with the container's environment, not this one.)
unset DB_ROOT_PASSWORD DB_REPLICATION_PASSWORD DB_APP_PASSWORD DB_MONITOR_PASSWORD
# Transactional tables only: a MyISAM, Aria or MEMORY table cannot keep the promise that no
# acknowledged write is lost (its writes are not in a transaction semi-sync waits for, and
# a MEMORY table is empty on the replica after a restart: replication then stops on it).
# With the server's default NO_ENGINE_SUBSTITUTION, a CREATE TABLE naming another engine is
# refused with an error rather than silently made InnoDB. Given here, not in the config file,
# so that mariadb-install-db's first start still makes the system tables as it needs them.
exec mariadbd --enforce-storage-engine=InnoDB "$@"
