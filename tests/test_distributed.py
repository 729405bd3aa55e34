"""Beyond one machine: exports with one task per position on Dask distributed.

A LocalCluster of worker processes on 127.0.0.1, and a scheduler plus a worker
started as the `dask` commands a lab would run, both with no dashboard; every
file is checked against the in-process export of the same experiment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed", reason="Dask distributed not installed (the test extra)")

from pyomero_upload.cli import main  # noqa: E402
from pyomero_upload.engine import Engine, EngineSpec, check_address  # noqa: E402
from pyomero_upload.errors import InputError, UsageError  # noqa: E402
from pyomero_upload.export import OmeTiffWriter, export_ome_tiff  # noqa: E402
from pyomero_upload.export.frame import write_position  # noqa: E402
from pyomero_upload.layout import discover  # noqa: E402


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    """The in-process export of the demo: what every distributed run must equal."""
    out = tmp_path_factory.mktemp("reference")
    export_ome_tiff(discover(demo), out, "demo", workers=2)
    return out / "demo"


def _same_pixels(folder: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.glob("*.ome.tiff"))
    assert sorted(p.name for p in folder.glob("*.ome.tiff")) == names
    for name in names:
        np.testing.assert_array_equal(tifffile.imread(folder / name),
                                      tifffile.imread(reference / name))
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_local_cluster_export_equals_the_in_process_one(demo, reference, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["export", str(demo), "-o", str(out), "-n", "demo", "--cluster", "local:2",
            "--workers", "1", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(e["position"], e["status"]) for e in report["outputs"]] == [
        ("pos001", "created"), ("pos002", "created"), ("pos003", "created")]
    _same_pixels(out / "demo", reference)
    assert (out / "demo" / "metadata").is_dir()  # written by the coordinator
    assert main(args) == 0  # the re-run: every position up to date, nothing submitted
    assert {e["status"] for e in json.loads(capsys.readouterr().out)["outputs"]} == {"skipped"}


class DyingWriter(OmeTiffWriter):
    """Kills its worker process (as the OOM killer or a node failure would) halfway
    through the first attempt at each position; later attempts write normally."""

    def __init__(self, marks: Path):
        super().__init__(workers=1)
        self.marks = marks

    def write(self, spec, planes, target, on_plane):
        mark = self.marks / spec.name
        if not mark.exists():
            mark.touch()

            def half_then_die():
                for i, plane in enumerate(planes):
                    if i == spec.n_planes // 2:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield plane

            return super().write(spec, half_then_die(), target, on_plane)
        return super().write(spec, planes, target, on_plane)


def test_a_worker_killed_mid_position_leaves_one_complete_file_each(demo, reference,
                                                                    tmp_path):
    """Dask runs each position again on another worker; the result is the in-process
    export, with no temporary file of the dead attempts left."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from pyomero_upload.export.frame import run_export

    marks = tmp_path / "marks"
    marks.mkdir()
    with Engine(EngineSpec(cluster="local:2")) as engine:
        result = run_export(discover(demo), tmp_path / "out", "demo", DyingWriter(marks),
                            workers=1, engine=engine)
    assert sorted(p.name for p in marks.iterdir()) == ["pos001", "pos002", "pos003"]
    assert [e.status for e in result.entries] == ["created"] * 3
    _same_pixels(tmp_path / "out" / "demo", reference)


def test_a_task_run_twice_writes_once(demo, tmp_path):
    """At least once: the second run of a position finds its output complete and
    leaves it as it is."""
    exp = discover(demo)
    target = tmp_path / "pos001.ome.tiff"
    writer = OmeTiffWriter(workers=1)
    args = (exp, exp.positions[0], target, "f" * 64, writer, None, None, 1)
    assert write_position(*args) == exp.planes_per_position
    before = target.stat().st_mtime_ns
    time.sleep(0.01)
    assert write_position(*args) == exp.planes_per_position
    assert target.stat().st_mtime_ns == before


def test_an_unreachable_folder_names_the_path_and_host(demo, tmp_path):
    import socket

    exp = discover(demo)
    exp.root = tmp_path / "not-mounted-here"
    with pytest.raises(InputError, match=f"not reachable from {socket.gethostname()}") as err:
        write_position(exp, exp.positions[0], tmp_path / "x.ome.tiff", "f", OmeTiffWriter(),
                       None, None, 1)
    assert err.value.path == str(exp.root)
    import pickle

    again = pickle.loads(pickle.dumps(err.value))  # as it crosses from a worker
    assert (again.path, again.problem) == (err.value.path, err.value.problem)


@pytest.mark.parametrize("address, ok", [
    ("tcp://127.0.0.1:8786", True), ("tls://scheduler.lab.example:8786", True),
    ("tcp://10.11.12.13:8786", False), ("udp://127.0.0.1:1", False)])
def test_plain_tcp_only_on_loopback(address, ok):
    if ok:
        check_address(address)
    else:
        with pytest.raises(UsageError, match="tls://"):
            check_address(address)


def test_one_engine_option_at_a_time():
    with pytest.raises(UsageError, match="one of"):
        EngineSpec(cluster="local:2", scheduler="tcp://127.0.0.1:1")
    with pytest.raises(UsageError, match="local:N"):
        EngineSpec(cluster="local:zero")


@contextlib.contextmanager
def lab_cluster(where: Path, tls: list[str] = ()):
    """`dask scheduler` and `dask worker --nworkers 2` on 127.0.0.1, as a lab starts them
    (with ``tls`` options, over TLS); yields the scheduler file.  Both are stopped by pid."""
    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    if dask is None:
        pytest.skip("the dask command is not installed")
    sched_file = where / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    protocol = ["--protocol", "tls"] if tls else []
    procs = [subprocess.Popen([dask, "scheduler", *protocol, "--host", "127.0.0.1", "--port",
                               "0", "--no-dashboard", "--scheduler-file", str(sched_file),
                               *tls], **quiet)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        procs.append(subprocess.Popen(
            [dask, "worker", "--scheduler-file", str(sched_file), "--nworkers", "2",
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", *tls], **quiet))
        yield sched_file
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_a_lab_scheduler_and_worker_through_the_scheduler_file(demo, reference, tmp_path):
    """`dask scheduler` and `dask worker`, as a lab starts them, on 127.0.0.1; the export
    joins them through the scheduler file."""
    with lab_cluster(tmp_path) as sched_file:
        out = tmp_path / "out"
        assert main(["-q", "export", str(demo), "-o", str(out), "-n", "demo",
                     "--scheduler-file", str(sched_file), "--workers", "1"]) == 0
        _same_pixels(out / "demo", reference)


def _tls_files(where: Path) -> dict[str, Path]:
    """A CA and one certificate signed by it for 127.0.0.1 (openssl, as the README says)."""
    ca_key, ca, key, csr, cert = (where / n for n in ("ca.key", "ca.pem", "node.key",
                                                       "node.csr", "node.pem"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lab-ca",
        "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
        str(key), "-out", str(csr))
    ext = where / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert))
    for f in (ca_key, key):
        f.chmod(0o600)
    return {"ca": ca, "cert": cert, "key": key}


def test_a_lab_scheduler_and_workers_over_tls(demo, reference, tmp_path, monkeypatch):
    """The lab set-up with TLS: `dask scheduler` and `dask worker --nworkers 2` with a
    lab's certificates; the export reaches them at tls://127.0.0.1 with Dask's own
    configuration (no key or certificate on our command line)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    import dask.config

    tls = _tls_files(tmp_path)
    opts = ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]), "--tls-key",
            str(tls["key"])]
    for key, value in (("CA_FILE", tls["ca"]), ("CLIENT__CERT", tls["cert"]),
                       ("CLIENT__KEY", tls["key"])):
        monkeypatch.setenv(f"DASK_DISTRIBUTED__COMM__TLS__{key}", str(value))
    dask.config.refresh()
    try:
        with lab_cluster(tmp_path, opts) as sched_file:
            address = json.loads(sched_file.read_text())["address"]
            assert address.startswith("tls://127.0.0.1:")
            out = tmp_path / "out"
            assert main(["-q", "export", str(demo), "-o", str(out), "-n", "demo",
                         "--scheduler", address, "--workers", "1"]) == 0
            _same_pixels(out / "demo", reference)
    finally:
        monkeypatch.undo()
        dask.config.refresh()


# --- uploads to the OMERO double -----------------------------------------------------------


def _plane_sha1(path: Path) -> str:
    import hashlib

    from helpers import read_png

    return hashlib.sha1(read_png(path).astype(">u2").tobytes()).hexdigest()


def test_local_cluster_upload_one_session_complete_images_in_order(demo, double, monkeypatch,
                                                                   capsys):
    """`upload --cluster local:2`: one session created (the workers join it), one
    complete image per position in position order, every plane's SHA-1 its source's."""
    pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")
    from helpers import demo_planes

    monkeypatch.setenv("OMERO_PASSWORD", double.password)
    monkeypatch.delenv("OMERO_SESSION_KEY", raising=False)
    before = {s["uuid"] for s in double.state()["sessions"]}
    args = ["upload", str(demo), "--dataset", "on-dask", "--host", double.host, "--port",
            str(double.port), "--user", double.user, "--cluster", "local:2", "--workers", "1",
            "--max-uploads", "2", "--json", "-x"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    state = double.state()
    new_sessions = [s for s in state["sessions"] if s["uuid"] not in before]
    assert len(new_sessions) == 1 and not new_sessions[0]["alive"]  # ended by the coordinator
    ids = [e["id"] for e in report["images"]]
    assert [e["position"] for e in report["images"]] == ["pos001", "pos002", "pos003"]
    assert ids == sorted(ids)
    objects = {(o["class"], o["id"]): o for o in state["objects"]}
    in_dataset = sorted(o["fields"]["child"]["id"] for (k, _), o in objects.items()
                        if k == "DatasetImageLink"
                        and o["fields"]["parent"]["id"] == report["dataset"]["id"])
    assert in_dataset == ids  # no extra image left anywhere in the dataset
    for entry in report["images"]:
        (pixels_id,) = [o["id"] for (k, _), o in objects.items()
                        if k == "Pixels" and o["fields"]["image"]["id"] == entry["id"]]
        planes = state["pixels"][str(pixels_id)]["planes"]
        channels = ["Brightfield", "DIC", "GFP"]
        for t, c, z, path in demo_planes(demo, entry["position"]):
            assert planes[f"{z - 1},{channels.index(c)},{t - 1}"] == _plane_sha1(path)
    assert main(args) == 0  # the re-run: everything complete, skipped
    assert {e["status"] for e in json.loads(capsys.readouterr().out)["images"]} == {"skipped"}


def test_a_session_key_never_shows_in_a_plugin_or_settings_repr():
    from pyomero_upload.engine import _omero_plugin
    from pyomero_upload.omero.connection import ConnectionSettings

    settings = ConnectionSettings("omero.example.org", 4064, "alice", None, None, True,
                                  "secret-session-key")
    assert "secret-session-key" not in repr(settings)
    assert "secret-session-key" not in repr(_omero_plugin(settings))


# --- Slurm, for real: a one-node cluster of Debian's slurm-wlm ---------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from pyomero_upload.testing import slurm as slurm_testing

    reason = slurm_testing.unavailable_reason()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue not installed")
    with slurm_testing.running_slurm(tmp_path_factory.mktemp("slurm")) as env:
        yield env


SLURM_ARGS = ["--cluster", "slurm", "--jobs", "1", "--job-cores", "2", "--job-mem", "2GB",
              "--walltime", "0:10:00", "--workers", "2"]


@pytest.mark.xdist_group("slurm")  # one Slurm cluster per run: its tests on one worker
def test_slurm_export(demo, reference, slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)  # where sbatch puts the jobs' slurm-N.out
    out = tmp_path / "out"
    assert main(["-q", "export", str(demo), "-o", str(out), "-n", "demo", *SLURM_ARGS]) == 0
    _same_pixels(out / "demo", reference)


@pytest.mark.xdist_group("slurm")
def test_slurm_upload(demo, double, slurm, monkeypatch, capsys, tmp_path):
    pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)  # where sbatch puts the jobs' slurm-N.out
    monkeypatch.setenv("OMERO_PASSWORD", double.password)
    assert main(["upload", str(demo), "--dataset", "on-slurm", "--host", double.host,
                 "--port", str(double.port), "--user", double.user, "-x", "--json",
                 *SLURM_ARGS]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(e["position"], e["status"]) for e in report["images"]] == [
        ("pos001", "created"), ("pos002", "created"), ("pos003", "created")]
    objects = {(o["class"], o["id"]): o for o in double.state()["objects"]}
    for entry in report["images"]:
        image = objects[("Image", entry["id"])]
        (record,) = [objects[("MapAnnotation", a["id"])] for a in image["annotations"]
                     if a["ns"] == "pyomero-upload/source"]
        pairs = dict(map(tuple, record["fields"]["mapValue"]))
        assert pairs["Status"] == "complete" and pairs["Source"] == entry["position"]
    in_dataset = [o["fields"]["child"]["id"] for (k, _), o in objects.items()
                  if k == "DatasetImageLink"
                  and o["fields"]["parent"]["id"] == report["dataset"]["id"]]
    assert sorted(in_dataset) == [e["id"] for e in report["images"]]


def test_the_coordinator_killed_then_rerun_gives_one_complete_file_each(demo, reference,
                                                                        tmp_path):
    """SIGKILL the command itself (the coordinator, with its LocalCluster) once a position
    is written; the same command again finishes the export: one complete file per
    position, equal to the in-process export, no temporaries."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pyomero_upload", "-q", "export", str(demo), "-o", str(out),
           "-n", "demo", "--cluster", "local:2", "--workers", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((out / "demo").glob("*.ome.tiff")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the export ended before it could be killed"
            time.sleep(0.05)
    finally:
        running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)  # the command and every worker it started
        proc.wait()
    assert running  # killed mid-run, not after it ended
    assert subprocess.run(cmd).returncode == 0
    _same_pixels(out / "demo", reference)


class _KillOncePlugin:
    """Installed on every worker: the first worker to send its 5th plane of any image
    SIGKILLs itself (a node lost mid-upload), once across the cluster (a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def setup(self, worker) -> None:
        from pyomero_upload.omero import pixels

        real, marker, sent = pixels.PixelWriter.add, self.marker, [0]

        def add(writer, plane):
            sent[0] += 1
            if sent[0] == 5:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(writer, plane)

        pixels.PixelWriter.add = add


def test_a_worker_killed_mid_upload_leaves_one_complete_image_each(demo, double, tmp_path):
    """A worker dies halfway through sending a position's pixels; Dask runs that position
    again elsewhere: a new image (OMERO opens half-written pixels read-only), and the
    reconcile removes the dead attempt's.  One complete, pixel-exact image per position
    and nothing else in the dataset."""
    pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")
    import cloudpickle
    from distributed.diagnostics.plugin import WorkerPlugin

    from helpers import demo_planes
    from pyomero_upload.omero import connection, queries
    from pyomero_upload.plugins.base import UploadOptions
    from pyomero_upload.upload import upload_experiment

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plugin = type("KillOnce", (_KillOncePlugin, WorkerPlugin), {})(str(tmp_path / "killed"))
    settings = connection.ConnectionSettings(double.host, double.port, double.user,
                                             double.password)
    with connection.Connection.open(settings) as conn, \
            Engine(EngineSpec(cluster="local:2")) as engine:
        engine.client.register_plugin(plugin, name="kill-once")
        result = upload_experiment(conn, discover(demo), None, UploadOptions(
            dataset="worker-killed", workers=1, max_uploads=2, engine=engine))
        existing = queries.existing_images(conn, result.dataset_id)
    assert (tmp_path / "killed").exists()  # a worker did die mid-image
    # (the position run again has a newer image, so ids follow positions no longer)
    assert sorted((i.name, i.complete) for i in existing) == [
        ("pos001", True), ("pos002", True), ("pos003", True)]
    assert {i.name: i.id for i in existing} == result.image_ids
    state = double.state()
    channels = ["Brightfield", "DIC", "GFP"]
    for image in existing:
        (pixels_id,) = [o["id"] for o in state["objects"] if o["class"] == "Pixels"
                        and o["fields"]["image"]["id"] == image.id]
        planes = state["pixels"][str(pixels_id)]["planes"]
        for t, c, z, path in demo_planes(demo, image.name):
            assert planes[f"{z - 1},{channels.index(c)},{t - 1}"] == _plane_sha1(path)


def test_a_task_gets_its_own_position_not_the_whole_experiment(demo):
    """Each task's experiment holds its position and the first (the time origin), so
    it pickles to a fraction of the whole and describes the position exactly as the
    whole experiment does."""
    import pickle
    from dataclasses import replace

    from pyomero_upload.describe import describe
    from pyomero_upload.metadata import load_metadata

    demo_exp = discover(demo)
    metadata = load_metadata(demo)
    # 30 positions (the demo's three, ten times over under other names)
    exp = replace(demo_exp, positions=[
        replace(p, name=f"{p.name}-{i}", files={k: Path(str(f)) for k, f in p.files.items()})
        for i in range(10) for p in demo_exp.positions])
    whole = len(pickle.dumps(exp))
    for pos in exp.positions:
        task = exp.for_task(pos)
        assert [p.name for p in task.positions] == list(
            dict.fromkeys([exp.positions[0].name, pos.name]))
        assert task.plane_paths(pos) == exp.plane_paths(pos)
        assert len(pickle.dumps(task)) < whole / 6  # 2 positions of 30
        assert (describe(task, pos, metadata, fingerprint="f")
                == describe(exp, pos, metadata, fingerprint="f"))


def _malloc_env() -> dict:
    return {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}


def test_local_workers_start_with_glibc_thresholds_for_plane_sized_buffers():
    """Dask's nanny would start workers with a 64 KiB trim threshold, which turns off
    glibc's adaptive mmap threshold (every plane buffer a fresh mmap); our
    LocalCluster's workers start with the thresholds glibc would adapt to."""
    from pyomero_upload.engine import WORKER_MALLOC_ENV

    with Engine(EngineSpec(cluster="local:1")) as engine:
        seen = engine.client.run(_malloc_env)
    assert list(seen.values()) == [WORKER_MALLOC_ENV]


def test_importing_dask_jobqueue_keeps_the_sigint_handler():
    # dask-jobqueue's import sets SIGINT to sys.exit() (exit status 0 on Ctrl-C)
    code = ("import signal; from pyomero_upload.engine import _import_jobqueue; "
            "_import_jobqueue(); "
            "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
            "signal.getsignal(signal.SIGINT)")
    pytest.importorskip("dask_jobqueue")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
