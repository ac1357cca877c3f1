#!/usr/bin/env bash
# Installs what the project's commands need on a Debian (bookworm) machine, and only what is
# missing: the Docker Compose v2 plugin, debootstrap, and the test clients. Idempotent; safe
# to run on every `make up` / `make test`.
#
# The Compose v2 plugin is not in bookworm. Debian trixie's `docker-compose` package ships it
# as a single static binary, so we download that one .deb with a private apt state (the host's
# own apt lists and sources are untouched) and unpack the binary into the CLI plugin folder.
# The mirror is read from the host's apt configuration; no registry host is named here.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "sudo"; fi; }
SUDO=$(need_root)

# Debian packages the tests and scripts use, by the command that proves each is there.
declare -A PACKAGES=(
  [debootstrap]=debootstrap
  [dig]=bind9-dnsutils
  [kdig]=knot-dnsutils
  [curl]=curl
  [chromium]=chromium
  [brotli]=brotli
  [mariadb]=mariadb-client
  [sysbench]=sysbench
  # scripts/secrets.sh: the bcrypt hash of the Prometheus login.
  [htpasswd]=apache2-utils
  [jq]=jq
  # scripts/test.sh: every script `make test` runs is checked first.
  [shellcheck]=shellcheck
  # The demo's partition faults: iptables in a container's network namespace (nsenter).
  [iptables]=iptables
  [nsenter]=util-linux
  # db-router's client matrix (db-router/tests/clients.rs): PHP mysqli and PDO over mysqlnd,
  # and MariaDB's own test runner and test files.
  [php]=php-cli
  [mariadb-test]=mariadb-test
)
# `install-tools.sh bench` adds what the benchmarks in bench/ run against.
if [ "${1:-}" = bench ]; then
  PACKAGES+=([nsd]=nsd [dnsperf]=dnsperf [taskset]=util-linux [wrk]=wrk [haproxy]=haproxy [nginx]=nginx
             [knotd]=knot [h2load]=nghttp2-client [openssl]=openssl)
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    step "apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  step "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
for cmd in "${!PACKAGES[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGES[$cmd]}")
done
# PyMySQL (a db-router test's client) has no command: it is there when Debian's python3 imports it.
/usr/bin/python3 -c 'import pymysql' >/dev/null 2>&1 || missing+=(python3-pymysql)
# Likewise the client matrix's PHP drivers and Perl's DBD::MariaDB (Connector/C underneath).
php -m 2>/dev/null | grep -qx pdo_mysql || missing+=(php-mysql)
/usr/bin/perl -MDBD::MariaDB -e 1 >/dev/null 2>&1 || missing+=(libdbd-mariadb-perl)
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

install_compose_plugin() {
  local plugin_dir=/usr/local/lib/docker/cli-plugins
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local mirror; mirror=$(debian_mirror)
  step "fetching Docker Compose v2 (Debian trixie's docker-compose package) from the host's Debian mirror"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb $mirror trixie main" > "$work/sources.list"
  local opts=(-o "Dir::State::Lists=$work/lists" -o "Dir::Etc::SourceList=$work/sources.list"
              -o "Dir::Etc::SourceParts=-" -o "Dir::Cache=$work/cache" -o "APT::Get::List-Cleanup=0"
              -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update -qq
  (cd "$work" && apt-get "${opts[@]}" download docker-compose >/dev/null)
  dpkg -x "$work"/docker-compose_*.deb "$work/root"
  $SUDO install -D -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" \
    "$plugin_dir/docker-compose"
  step "installed $(docker compose version)"
}

# mysql-connector-python (pure and C extension) is not in Debian: PyPI's wheel, pinned, into a
# folder of its own that the client matrix puts on PYTHONPATH (Debian's python3 is
# externally managed, so nothing goes into its site-packages).
CONNECTOR_PYTHON_VERSION=9.1.0
CONNECTOR_PYTHON_DIR=/usr/local/lib/foobar-test-clients/python
if ! PYTHONPATH=$CONNECTOR_PYTHON_DIR /usr/bin/python3 -c \
    "import mysql.connector, _mysql_connector; assert mysql.connector.__version__ == \"$CONNECTOR_PYTHON_VERSION\"" >/dev/null 2>&1; then
  /usr/bin/python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  step "pip install mysql-connector-python==$CONNECTOR_PYTHON_VERSION into $CONNECTOR_PYTHON_DIR"
  $SUDO /usr/bin/python3 -m pip install --disable-pip-version-check --root-user-action=ignore --quiet --upgrade \
    --target "$CONNECTOR_PYTHON_DIR" "mysql-connector-python==$CONNECTOR_PYTHON_VERSION"
fi

if ! docker compose version >/dev/null 2>&1; then
  install_compose_plugin
fi
