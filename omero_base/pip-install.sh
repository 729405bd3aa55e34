#!/usr/bin/env bash
# pip-install: `pip install` for the image builds, trusting the extra CA of a
# TLS-re-signing proxy when the build has one. The CA is the BuildKit secret
# extra_ca, readable only during the RUN that mounts it: nothing is written to
# the image (no pip.conf, no trust store change, no ENV).
#   RUN --mount=type=secret,id=extra_ca,required=false,mode=0444 \
#       pip-install PACKAGE...        # pip install --no-cache-dir --no-compile PACKAGE...
#   pip-install --run COMMAND [ARG...]  # any command that calls pip (build-ice-wheel.sh)
set -euo pipefail

ca=/run/secrets/extra_ca
if [ -f "$ca" ]; then
  if [ ! -r "$ca" ]; then
    echo "pip-install: $ca is not readable by uid $(id -u): mount it with mode=0444" >&2
    exit 1
  fi
  export PIP_CERT="$ca"
fi

if [ "${1:-}" = --run ]; then
  shift
  exec "$@"
fi
exec pip install --no-cache-dir --no-compile "$@"
