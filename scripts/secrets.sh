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
# `Authorization: Bearer TOKEN` (README: "Admin actions").
for name in db_root_password db_replication_password db_app_password db_monitor_password \
  admin_token; do
  file=secrets/$name
  if [ ! -s "$file" ]; then
    head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$file"
    # Readable by the non-root user inside the containers; the folder keeps others out.
    chmod 644 "$file"
    step "generated $file"
  fi
done
