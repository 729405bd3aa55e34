#!/usr/bin/env bash
# Start sshd for jovyan: host keys made now (never baked into the image), the
# key to accept from SSH_AUTHORIZED_KEYS or a mounted authorized_keys, the
# plug-in template offered in ~/work.
set -euo pipefail
ssh-keygen -A >/dev/null
install -d -o "$NB_UID" -g "$NB_GID" -m 700 /home/jovyan/.ssh
keys=/home/jovyan/.ssh/authorized_keys
if [ -n "${SSH_AUTHORIZED_KEYS:-}" ]; then
  printf '%s\n' "$SSH_AUTHORIZED_KEYS" > "$keys"
fi
if [ -f "$keys" ]; then
  chown "$NB_UID:$NB_GID" "$keys" 2>/dev/null || true
  chmod 600 "$keys" 2>/dev/null || true
elif [ ! -s /etc/ssh/authorized_keys.d/jovyan ]; then
  echo "no public key: set SSH_AUTHORIZED_KEYS or mount one at $keys" >&2
  exit 1
fi
if [ -w /home/jovyan/work ] && [ ! -e /home/jovyan/work/plugin-template ]; then
  cp -r /opt/plugin-template /home/jovyan/work/plugin-template
  chown -R "$NB_UID:$NB_GID" /home/jovyan/work/plugin-template
fi
mkdir -p /run/sshd
echo "sshd: ssh -X -p 2222 jovyan@<host> spyder"
exec /usr/sbin/sshd -D -e
