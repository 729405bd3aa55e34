"""A one-node Slurm cluster on 127.0.0.1, for tests and benchmarks (run as root).

Debian's ``slurm-wlm`` and ``munge``: ``munged`` with its default socket,
``slurmctld`` and ``slurmd`` in the foreground with a configuration of a few
lines under ``workdir`` (``SLURM_CONF`` points there), one node with this
machine's CPUs, one partition.  Every process is stopped by its pid on leaving::

    with running_slurm(tmp_path) as env:
        subprocess.run(["sbatch", "--wrap", "true"], env=env, check=True)

``env`` is ``os.environ`` plus ``SLURM_CONF``; :func:`unavailable_reason` says why
it cannot run here (no Slurm, not root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ._process import stop

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")


def unavailable_reason() -> str | None:
    """Why a Slurm cluster cannot be started here, or None when it can."""
    missing = [c for c in ("sbatch", "slurmctld", "slurmd", "munged", "sinfo")
               if shutil.which(c) is None]
    if missing:
        return f"Slurm is not installed (no {', '.join(missing)}: apt install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(workdir: Path, node: str, cpus: int) -> str:
    return "\n".join([
        "ClusterName=pyomero",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CryptoType=crypto/munge",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={workdir / 'state'}",
        f"SlurmdSpoolDir={workdir / 'spool'}",
        f"SlurmctldPidFile={workdir / 'slurmctld.pid'}",
        f"SlurmdPidFile={workdir / 'slurmd.pid'}",
        f"SlurmctldLogFile={workdir / 'slurmctld.log'}",
        f"SlurmdLogFile={workdir / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/builtin",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4096 State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _stop(proc: subprocess.Popen) -> None:
    stop(proc, timeout_s=20)


@contextlib.contextmanager
def running_slurm(workdir: Path, cpus: int | None = None,
                  timeout_s: float = 60.0) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd; yield the environment that reaches them."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    workdir = Path(workdir)
    for sub in ("state", "spool"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    conf = workdir / "slurm.conf"
    conf.write_text(_config(workdir, node, cpus or os.cpu_count() or 1))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []
    log = open(workdir / "daemons.log", "ab")  # noqa: SIM115 (closed below)
    try:
        if not MUNGE_KEY.exists():
            subprocess.run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True)
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
            procs.append(subprocess.Popen(
                ["munged", "--foreground", "--force", f"--key-file={MUNGE_KEY}"],
                stdout=log, stderr=log))
            _wait(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0,
                  timeout_s, "munged did not start", workdir)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], env=env, stdout=log,
                                      stderr=log))
        procs.append(subprocess.Popen(["slurmd", "-D"], env=env, stdout=log, stderr=log))

        def node_ready() -> bool:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env,
                                 capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed")

        _wait(node_ready, timeout_s, "the Slurm node did not become idle", workdir)
        yield env
    finally:
        for proc in reversed(procs):
            _stop(proc)
        log.close()


def _wait(ready, timeout_s: float, what: str, workdir: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    logs = ""
    for name in ("daemons.log", "slurmctld.log", "slurmd.log"):
        path = workdir / name
        if path.exists():
            logs += f"\n--- {name}\n" + "\n".join(path.read_text(errors="replace")
                                                  .splitlines()[-10:])
    raise RuntimeError(f"{what} within {timeout_s:.0f} s{logs}")


__all__ = ["running_slurm", "unavailable_reason"]
