#!/usr/bin/env bash
# Healthy if JupyterLab answers on 8888, or (omero_ide) sshd greets on 22.
python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8888/api', timeout=3)" \
  2>/dev/null && exit 0
{ exec 3<>/dev/tcp/127.0.0.1/22 && head -c 4 <&3 | grep -q SSH; } 2>/dev/null && exit 0
exit 1
