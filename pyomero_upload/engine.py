"""Beyond one machine: positions as tasks on Dask distributed.

The default run is in-process (:mod:`pyomero_upload.export.frame`) and never
imports Dask.  With ``--cluster local:N`` (a ``LocalCluster`` of N worker
processes), ``--scheduler ADDRESS`` (a running scheduler: ``tls://`` between
machines, ``tcp://`` only on 127.0.0.1), ``--scheduler-file FILE`` (Dask's
file on a shared home) or ``--cluster slurm`` (dask-jobqueue's
``SLURMCluster``), one task is one position: the CLI process stays the
coordinator (the folder's lock, the fingerprints, the ``metadata/`` folder,
the report), workers read planes from shared storage and write their
position's file.  Only names and small descriptions cross the wire.

Dask runs a task at least once (again where its worker died), so every task
checks its output on entry: already there with the same fingerprint, it
returns at once; otherwise it writes it (under a temporary name, renamed when
complete), replacing whatever a dead attempt left.

Needs the ``distributed`` extra: ``pip install 'pyomero-upload[distributed]'``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import InputError, UsageError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'pyomero-upload[distributed]' (dask[distributed], dask-jobqueue)"

#: glibc's malloc settings for the worker processes of the clusters we start.
#: Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting
#: any threshold turns off glibc's adaptive one, so every plane-sized buffer
#: (a decoded plane, a file's bytes) is a fresh ``mmap`` whose pages fault in
#: one by one: 1.6 million page faults and 2.5 CPU-s of kernel time for the
#: 7,500-plane benchmark on ``local:2``, against 57,000 with these values,
#: the ones glibc's adaptation reaches by itself (at most 32 MiB before a
#: buffer is mapped apart, trimming at twice that).
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                     "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}


@dataclass(frozen=True)
class EngineSpec:
    """Where positions run: a local cluster, a running scheduler, or Slurm.

    Attributes:
        cluster: ``local:N`` or ``slurm`` (None: use ``scheduler`` or ``scheduler_file``).
        scheduler: A scheduler's address (``tls://host:8786``; ``tcp://`` on 127.0.0.1 only).
        scheduler_file: Dask's scheduler file.
        jobs: Slurm jobs to start (one worker process each).
        job_cores: Cores per Slurm job.
        job_mem: Memory per Slurm job (``16GB``).
        walltime: Slurm walltime (``2:00:00``).
        queue: Slurm partition.
        account: Slurm account.
    """

    cluster: str | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    jobs: int = 1
    job_cores: int = 2
    job_mem: str = "4GB"
    walltime: str = "1:00:00"
    queue: str | None = None
    account: str | None = None

    def __post_init__(self) -> None:
        given = [x for x in (self.cluster, self.scheduler, self.scheduler_file) if x]
        if len(given) > 1:
            raise UsageError("give one of --cluster, --scheduler and --scheduler-file")
        if self.cluster and self.cluster != "slurm" and not _local_workers(self.cluster):
            raise UsageError(f"--cluster {self.cluster!r}: use local:N (N worker processes) "
                             "or slurm")
        if self.scheduler:
            check_address(self.scheduler)

    def __repr__(self) -> str:
        where = self.cluster or self.scheduler or f"scheduler file {self.scheduler_file}"
        return f"EngineSpec({where})"


def _local_workers(cluster: str) -> int | None:
    kind, _, n = cluster.partition(":")
    if kind != "local" or not n.isdigit() or int(n) < 1:
        return None
    return int(n)


def check_address(address: str) -> None:
    """A scheduler address we may send work (and later a session key) to.

    Plain ``tcp://`` carries everything in the clear, so it is accepted only on
    the loopback interface; between machines use ``tls://`` with Dask's
    ``Security`` (certificates in Dask's configuration, ``distributed.comm.tls``).
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme == "tls":
        return
    if parts.scheme != "tcp":
        raise UsageError(f"--scheduler {address}: use tls://HOST:PORT (or tcp:// on 127.0.0.1)")
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        loopback = False
    if not loopback:
        raise UsageError(f"--scheduler {address}: tcp:// is not encrypted; between machines "
                         "use tls:// (tcp:// is accepted on 127.0.0.1 only)")


class Engine:
    """A Dask client (and the cluster it started, if any) for one command."""

    def __init__(self, spec: EngineSpec):
        try:
            import distributed
        except ImportError:
            raise InputError(None, f"{spec!r} needs Dask distributed: {INSTALL_HINT}") from None
        self.spec = spec
        self.cluster: Any = None
        self._semaphores: list[Any] = []
        self._joined = False
        if spec.cluster and spec.cluster.startswith("local"):
            import dask

            n = _local_workers(spec.cluster) or 1
            # set before each worker process starts (and restarts), as Dask's own
            # setting is (distributed.nanny.pre-spawn-environ)
            with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v
                                  for k, v in WORKER_MALLOC_ENV.items()}):
                self.cluster = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=":0" if _has_bokeh() else None)
            self.client = distributed.Client(self.cluster)
        elif spec.cluster == "slurm":
            self.cluster = _slurm_cluster(spec)
            self.client = distributed.Client(self.cluster)
        elif spec.scheduler_file:
            self.client = distributed.Client(scheduler_file=spec.scheduler_file)
        else:
            self.client = distributed.Client(spec.scheduler)
        link = getattr(self.client, "dashboard_link", None)
        if link and _has_bokeh():
            log.warning("Dask dashboard: %s", link)

    def map_ordered(self, fn: Callable[..., Any], items: Iterable[tuple[Any, ...]],
                    keys: Iterable[str]) -> Iterator[Any]:
        """Run ``fn(*item)`` for each item as its own task; yield the results in order.

        ``keys`` name the tasks (what the dashboard shows: positions, never data).
        The first failure is raised; the tasks not yet started are cancelled.
        """
        run = uuid.uuid4().hex[:8]  # keys are unique on a scheduler others share
        futures = [self.client.submit(fn, *item, key=f"{key}-{run}", pure=False)
                   for item, key in zip(items, keys, strict=True)]
        try:
            for fut in futures:
                yield fut.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def join_omero(self, settings: Any) -> None:
        """Give every worker process one connection to the coordinator's OMERO session.

        ``settings`` hold the session key (never the password); the plug-in that
        carries them crosses only the scheduler's comms (``tls://``, or loopback
        ``tcp://``), and neither its repr nor a task's shows the key.  Each worker
        joins once, in the plug-in's ``setup``, and leaves in its ``teardown``.
        """
        self.client.register_plugin(_omero_plugin(settings), name=OMERO_PLUGIN)
        self._joined = True

    def semaphore(self, max_leases: int) -> str:
        """A cluster-wide semaphore of ``max_leases`` (OMERO writers at once); its name."""
        import distributed

        name = f"pyomero-upload-omero-{uuid.uuid4().hex[:8]}"
        self._semaphores.append(distributed.Semaphore(max_leases=max_leases, name=name,
                                                      scheduler_rpc=None))
        return name

    def close(self) -> None:
        if self._joined:  # each worker's teardown closes its connection
            with contextlib.suppress(Exception):
                self.client.unregister_worker_plugin(OMERO_PLUGIN)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The worker plug-in's name; also where tasks find their worker's connection.
OMERO_PLUGIN = "pyomero-upload-omero"


def _omero_plugin(settings: Any) -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class OmeroSession(WorkerPlugin):
        """One OMERO connection per worker process, joined to the coordinator's session."""

        name = OMERO_PLUGIN

        def __init__(self, settings: Any):
            self.settings = settings
            self.conn: Any = None

        def __repr__(self) -> str:  # the settings' own repr hides the key; say less still
            return f"OmeroSession({self.settings.host}:{self.settings.port})"

        def setup(self, worker: Any) -> None:
            from .omero.connection import Connection

            self.conn = Connection.open(self.settings)

        def teardown(self, worker: Any) -> None:
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.close()  # a joined session is left alive: the coordinator ends it

    return OmeroSession(settings)


def worker_connection() -> Any:
    """In a task: this worker process's OMERO connection (see :meth:`Engine.join_omero`)."""
    import distributed

    plugin: Any = distributed.get_worker().plugins.get(OMERO_PLUGIN)
    if plugin is None or plugin.conn is None:
        raise RuntimeError("this worker has no OMERO connection (Engine.join_omero)")
    return plugin.conn


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _import_jobqueue() -> Any:
    """dask-jobqueue, imported with this process's SIGINT handler kept.

    Importing it replaces the SIGINT handler with ``sys.exit()`` (its
    ``runner`` module), which would turn Ctrl-C into a clean exit with status 0
    and fails outside the main thread; the handler is put back.
    """
    import signal

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError(None, f"--cluster slurm needs dask-jobqueue: {INSTALL_HINT}") from None
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def _slurm_cluster(spec: EngineSpec) -> Any:
    SLURMCluster = _import_jobqueue().SLURMCluster  # noqa: N806 (a class)
    cluster = SLURMCluster(cores=spec.job_cores, processes=1, memory=spec.job_mem,
                           walltime=spec.walltime, queue=spec.queue, account=spec.account)
    cluster.scale(jobs=spec.jobs)
    return cluster


__all__ = ["Engine", "EngineSpec", "check_address", "worker_connection"]
