#!/usr/bin/env bash
# Build a Debian root image from Debian's packages alone (debootstrap, then
# `docker import`), for hosts without a container registry: air-gapped lab
# networks, and CI machines like ours.  Reuses the image if it exists.
#   docker/root-image/build.sh [TAG]     (FORCE=1 to rebuild; DEBIAN_MIRROR, SUITE)
set -euo pipefail

TAG=${1:-pyomero-upload/debian:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ -z "${FORCE:-}" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "root image: $TAG exists"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq debootstrap
  else
    echo "root image: needs debootstrap (apt-get install debootstrap) and root" >&2
    exit 1
  fi
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
# minbase: what a slim image has; the images add the rest with apt.
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$MIRROR"
cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
SOURCES
# Like the official slim images: no apt caches, no docs, no man pages.
printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
  > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  > "$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/*/[!c]* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
release=$(cat "$rootfs/etc/debian_version")
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# The release and build date travel down the chain as labels (tests/images checks them).
tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
  --change "LABEL org.opencontainers.image.title=\"Debian $SUITE (debootstrap)\"" \
  --change "LABEL org.pyomero-upload.debian-suite=\"$SUITE\" org.pyomero-upload.debian-release=\"$release\" org.pyomero-upload.root-built=\"$built\" org.pyomero-upload.debian-mirror=\"$MIRROR\"" \
  - "$TAG"
echo "root image: built $TAG (Debian $release, $built)"
