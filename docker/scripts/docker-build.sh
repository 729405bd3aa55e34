#!/usr/bin/env bash
# `docker build` with BuildKit (needed for --secret and RUN --mount): buildx
# where it is installed, else a docker CLI that has BuildKit built in (< 23).
#   docker-build.sh [docker build arguments...]
set -euo pipefail
if docker buildx version >/dev/null 2>&1; then
  exec docker buildx build --load "$@"
fi
for cli in $(which -a docker); do
  major=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
  if [ -n "$major" ] && [ "$major" -lt 23 ]; then
    DOCKER_BUILDKIT=1 exec "$cli" build "$@"
  fi
done
echo "docker-build: needs BuildKit: install docker-buildx, or a docker CLI older than 23" >&2
exit 1
