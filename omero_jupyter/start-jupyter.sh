#!/usr/bin/env bash
# Start JupyterLab on port 8888 with a token, always.  The token comes from
# JUPYTER_TOKEN or is generated and printed once; it is handed to Jupyter
# through the environment, never on a command line.
set -euo pipefail
if [ -z "${JUPYTER_TOKEN:-}" ]; then
  JUPYTER_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')
  echo "JupyterLab token (generated; set JUPYTER_TOKEN to choose one): ${JUPYTER_TOKEN}"
fi
export JUPYTER_TOKEN
root=/home/jovyan/work
[ -d "$root" ] || root="$HOME"
exec jupyter lab --no-browser --ServerApp.ip=0.0.0.0 --ServerApp.port=8888 \
  --ServerApp.root_dir="$root" --ServerApp.allow_remote_access=True \
  --IdentityProvider.allow_password_change=False "$@"
