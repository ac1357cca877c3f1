#!/usr/bin/env bash
# Creates the stack's secrets (database passwords, the admin token) in secrets/, once: random
# values on first run, kept afterwards. They are mounted into containers as Docker secrets
# (/run/secrets/...), never baked into an image, and secrets/ is ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
mkdir -p secrets
chmod 700 secrets
# admin_token: what a state-changing admin request (drain, enable, rejoin) must carry as
# `Authorization: Bearer TOKEN` (docs/operations.md, "Status pages and admin actions").
# prometheus_password: the login `operator` of status.foobar.com (Prometheus's basic auth).
for name in db_root_password db_replication_password db_app_password db_monitor_password \
  admin_token prometheus_password; do
  file=secrets/$name
  if [ ! -s "$file" ]; then
    head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$file"
    # Readable by the non-root user inside the containers; the folder keeps others out.
    chmod 644 "$file"
    step "generated $file"
  fi
done

# Prometheus's web config (--web.config.file): the login as a bcrypt hash, made again whenever
# the password is newer. The password goes by stdin, never on a command line.
web=secrets/prometheus_web.yml
if [ ! -s "$web" ] || [ secrets/prometheus_password -nt "$web" ]; then
  if command -v htpasswd >/dev/null; then
    hash=$(htpasswd -niBC 10 operator <secrets/prometheus_password | cut -d: -f2-)
  else
    hash=$(/usr/bin/python3 -W ignore -c 'import crypt, sys
print(crypt.crypt(sys.stdin.readline().strip(), crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10)))' \
      <secrets/prometheus_password)
  fi
  case $hash in
    "\$2"*) ;; # bcrypt's scheme: the literal $2
    *) echo "secrets.sh: cannot make a bcrypt hash: install apache2-utils (htpasswd)" >&2; exit 1 ;;
  esac
  printf '# Made by scripts/secrets.sh from secrets/prometheus_password.\nbasic_auth_users:\n  operator: %s\n' \
    "$hash" >"$web"
  chmod 644 "$web"
  step "generated $web"
fi
