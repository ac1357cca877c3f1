# shellcheck shell=bash
# Shared helpers for the project's shell scripts. Source it; it defines functions only.

# A progress line: what is happening now, and since when.
export SCRIPT_T0=${SCRIPT_T0:-$(date +%s)}
step() { printf '==> [%3ss] %s\n' "$(( $(date +%s) - SCRIPT_T0 ))" "$*" >&2; }

# The URI of Debian's main archive as the host's apt configuration names it (deb822 sources
# first, then one-line sources). Never hard-code a mirror: read it from the machine.
debian_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '{for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
          | grep -v -- '-security' | head -n1 || true)
  fi
  [ -n "$uri" ] || { echo "no Debian mirror found in the apt configuration" >&2; return 1; }
  printf '%s\n' "${uri%/}"
}
