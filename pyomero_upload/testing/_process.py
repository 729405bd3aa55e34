"""Stopping the servers the test helpers start."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM the process, then SIGKILL it if it has not ended within ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
