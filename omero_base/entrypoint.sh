#!/usr/bin/env bash
# Thin entrypoint: run the start hooks in /usr/local/bin/start.d in order, then
# exec the command.  Started as root (docker run --user root -e NB_UID=...),
# it gives jovyan that uid/gid and drops to it, so files written to the
# mounted work folder belong to the host user.
set -euo pipefail

# Commands an image declares in ROOT_COMMANDS (e.g. sshd's starter) keep root.
for cmd in ${ROOT_COMMANDS:-}; do
  if [ "$(id -u)" = 0 ] && [ "${1:-}" = "$cmd" ]; then
    exec "$@"
  fi
done

if [ "$(id -u)" = 0 ] && [ "${STAY_ROOT:-0}" != 1 ]; then
  uid=${NB_UID:-1000}
  gid=${NB_GID:-100}
  if [ "$uid" != "$(id -u "$NB_USER")" ]; then
    usermod -u "$uid" "$NB_USER" >/dev/null
  fi
  if [ "$gid" != 100 ] && ! getent group "$gid" >/dev/null; then
    groupadd -g "$gid" hostgroup
  fi
  usermod -g "$gid" "$NB_USER" >/dev/null
  chown "$uid:$gid" "$HOME" "$HOME/work" 2>/dev/null || true
  # The image's environment (OMERO_VERSION, PATH, ...) is kept; only the user changes.
  export HOME="/home/$NB_USER" USER="$NB_USER" LOGNAME="$NB_USER"
  exec setpriv --reuid="$uid" --regid="$gid" --init-groups "$0" "$@"
fi

# Any uid (docker run --user 1234:1234): a writable HOME for caches and config.
if [ ! -w "$HOME" ]; then
  HOME="/tmp/home-$(id -u)"
  export HOME
  mkdir -p "$HOME"
fi

for hook in /usr/local/bin/start.d/*; do
  [ -x "$hook" ] || continue
  "$hook"
done
exec "$@"
