"""Wait until a real login to OMERO works (password from OMERO_PASSWORD, never argv).

    OMERO_PASSWORD=... python wait-omero.py HOST PORT USER [SECONDS]
"""

import os
import sys
import time

from pyomero_upload.errors import OmeroError
from pyomero_upload.omero.connection import Connection, ConnectionSettings

host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + (float(sys.argv[4]) if len(sys.argv) > 4 else 300)
password = os.environ["OMERO_PASSWORD"]
while True:
    try:
        Connection.open(ConnectionSettings(host, port, user, password, timeout_s=10)).close()
        print(f"logged in to {host}:{port} as {user}")
        break
    except OmeroError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"OMERO not ready: {exc}")
        time.sleep(5)
