#!/usr/bin/env bash
# Makes sure the base images the Dockerfiles start FROM exist locally.
#
# On a machine with a registry, a missing base image is simply pulled. On a machine without
# one (no `docker pull`), it is built here from Debian's packages: debootstrap a minimal
# bookworm root filesystem, then `docker import` it under the same name and tag, so that the
# Dockerfiles stay the ones a user with internet builds. Idempotent: an image that is already
# present is left alone.
#
# Usage: scripts/base-images.sh [IMAGE ...]   (default: debian:bookworm-slim)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

images=("$@")
[ "${#images[@]}" -gt 0 ] || images=(debian:bookworm-slim)

bootstrap_debian() {
  local image=$1 suite=${1#*:}
  suite=${suite%%-*}
  local mirror; mirror=$(debian_mirror)
  local rootfs; rootfs=$(mktemp -d /var/tmp/foobar-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  step "debootstrap --variant=minbase $suite (about 30 s; progress below)"
  # debootstrap prints a line per package and stage; show one line per stage, with a count.
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" 2>&1 | awk '
    /^I: Retrieving/ { r++; if (r % 20 == 0) printf "    retrieved %d packages\n", r; fflush(); next }
    /^I: (Validating|Extracting|Unpacking|Configuring) [^ ]+\.\.\.$/ { next }
    /^I: Validating/ { next }
    /^[IWE]: /       { print "    " $0; fflush() }'
  # As the official slim image does: no downloaded .debs, apt lists, docs, man pages or
  # locales, and a dpkg exclude so that packages installed later stay slim too.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
         "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  printf 'APT::Install-Recommends "false";\n' > "$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  step "docker import -> $image"
  tar -C "$rootfs" -c . | docker import \
      --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
  step "built $image from Debian's packages ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec))"
}

for image in "${images[@]}"; do
  if docker image inspect "$image" >/dev/null 2>&1; then
    continue
  fi
  step "base image $image is missing; trying docker pull"
  if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
    step "pulled $image"
    continue
  fi
  case "$image" in
    debian:*) bootstrap_debian "$image" ;;
    *) echo "cannot build $image without a registry" >&2; exit 1 ;;
  esac
done
