"""``pyomero-upload watch``: readiness, once-only processing, restarts, failures, reports.

Acquisitions are simulated by a writer thread that copies the demo into the watched
folder time point by time point (planes first, then that time point's block of the
lab's log, as the microscope does), with pauses.  The watcher runs in a thread
(:class:`Watcher`), as ``--once`` passes through ``main([...])``, or as a process (to be
killed).  OMERO uploads go to the project's OMERO double and are checked in its state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpers import demo_planes
from pyomero_upload.cli import main
from pyomero_upload.layout import NamingRule
from pyomero_upload.watch import MARKER, Watcher, WatchOptions, auto_settle, parse_duration
from pyomero_upload.watch.scan import Scanner

ROOT = Path(__file__).resolve().parents[1]


# --- simulated acquisitions -----------------------------------------------------------------


def lab_files(demo: Path) -> tuple[str, str]:
    acq = next(f for f in demo.iterdir() if f.name.lower().endswith("acq.txt"))
    log = next(f for f in demo.iterdir() if f.name.lower().endswith("log.txt"))
    return acq.name, log.name


def acq_text(demo: Path, timepoints: int | None) -> bytes:
    """The demo's Acq file, promising ``timepoints`` (None: as it is; the real one 288)."""
    data = (demo / lab_files(demo)[0]).read_bytes()
    if timepoints is None:
        return data
    return re.sub(rb"(Time_settings:\s*\r?\n\s*\d+,\s*[\d.]+,)\s*\d+", rb"\g<1>%d" % timepoints,
                  data, count=1)


def log_blocks(demo: Path) -> list[bytes]:
    """The log's human header, then one block per time point (ending with its
    ``Timepoint:N completed`` line and what follows it)."""
    text = (demo / lab_files(demo)[1]).read_bytes()
    return re.split(rb"(?=------Time point_\d+------)", text)


def positions(demo: Path) -> list[str]:
    return sorted(p.name for p in demo.iterdir() if p.is_dir() and p.name.startswith("pos"))


def copy_timepoint(demo: Path, dest: Path, t: int) -> None:
    for pos in positions(demo):
        (dest / pos).mkdir(exist_ok=True)
        for tt, _c, _z, src in demo_planes(demo, pos):
            if tt == t:
                shutil.copyfile(src, dest / pos / src.name)


def timepoints(demo: Path) -> list[int]:
    return sorted({t for t, _, _, _ in demo_planes(demo, positions(demo)[0])})


def full_experiment(demo: Path, dest: Path, promise: int | None = None,
                    marker: bool = False) -> Path:
    """The whole demo at ``dest`` (planes hard-linked), its Acq promising ``promise``."""
    dest.mkdir(parents=True)
    acq, lab_log = lab_files(demo)
    (dest / acq).write_bytes(acq_text(demo, promise))
    shutil.copyfile(demo / lab_log, dest / lab_log)
    for pos in positions(demo):
        (dest / pos).mkdir()
        for src in (demo / pos).iterdir():
            try:
                os.link(src, dest / pos / src.name)
            except OSError:
                shutil.copyfile(src, dest / pos / src.name)
    if marker:
        (dest / MARKER).touch()
    return dest


class Acquisition(threading.Thread):
    """Writes the demo into ``dest`` as a microscope would: the Acq file and the log's
    header, then per time point its planes and its log block, ``pause`` s apart."""

    def __init__(self, demo: Path, dest: Path, promise: int | None, pause: float = 1.0,
                 marker: bool = False, stop_after: int | None = None):
        super().__init__(daemon=True)
        self.demo, self.dest, self.promise, self.pause = demo, dest, promise, pause
        self.marker, self.stop_after = marker, stop_after
        self.written: list[int] = []
        self.finished_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.dest.mkdir(parents=True)
            acq, lab_log = lab_files(self.demo)
            # The Acq file grows too: its first sections at the start (no time settings
            # yet: nothing to compare the log with), the rest with the first time point.
            text = acq_text(self.demo, self.promise)
            cut = text.index(b"Z_sectioning:")
            (self.dest / acq).write_bytes(text[:cut])
            blocks = log_blocks(self.demo)
            (self.dest / lab_log).write_bytes(blocks[0])
            for i, t in enumerate(timepoints(self.demo)[: self.stop_after]):
                time.sleep(self.pause)
                if i == 0:
                    with open(self.dest / acq, "ab") as fh:
                        fh.write(text[cut:])
                copy_timepoint(self.demo, self.dest, t)
                with open(self.dest / lab_log, "ab") as fh:
                    fh.write(blocks[i + 1])
                self.written.append(t)
            if self.marker:
                (self.dest / MARKER).touch()
            self.finished_at = time.time()
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def tree_fingerprint(root: Path) -> list[tuple[str, int, int, str]]:
    """Every path under ``root`` with its mode, mtime and content hash: what a test
    compares before and after (root ignores chmod a-w, so this is the check)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else ""
            out.append((str(p.relative_to(root)), st.st_mode, st.st_mtime_ns, digest))
    return out


class WatcherThread(threading.Thread):
    def __init__(self, watcher: Watcher):
        super().__init__(daemon=True)
        self.watcher = watcher
        self.error: BaseException | None = None
        self.rc: int | None = None

    def run(self) -> None:
        try:
            self.rc = self.watcher.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.watcher.stop()
        self.join(120)
        assert not self.is_alive()
        if self.error:
            raise self.error


def wait_for(predicate, timeout: float = 120.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def reports(report_dir: Path) -> list[dict]:
    path = report_dir / "watch.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def attempts(report_dir: Path) -> list[dict]:
    db = sqlite3.connect(report_dir / "watch.sqlite")
    try:
        cur = db.execute("SELECT path, status, rule, error FROM attempts ORDER BY id")
        return [dict(zip(("path", "status", "rule", "error"), r, strict=True))
                for r in cur.fetchall()]
    finally:
        db.close()


def watch_once(root: Path, tmp: Path, *extra: str) -> int:
    return main(["-q", "watch", str(root), "--to", "ome-tiff", "-o", str(tmp / "out"),
                 "--report-dir", str(tmp / "reports"), "--once", "--workers", "2", *extra])


def tiff_t(path: Path) -> int:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        return dict(zip(series.axes, series.shape, strict=True)).get("T", 1)


# --- small parts ----------------------------------------------------------------------------


def test_durations_and_auto_settle():
    assert parse_duration("90") == 90 and parse_duration("5m") == 300
    assert parse_duration("1.5h") == 5400 and parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert auto_settle(300) == 600  # the demo's interval: max(600, 420)
    assert auto_settle(30) == 150  # max(60, 150)
    assert auto_settle(None) == 600


def test_a_pass_lists_only_what_changed(demo, tmp_path):
    root = tmp_path / "root"
    for i in range(3):
        full_experiment(demo, root / f"exp{i}")
    scanner = Scanner([str(root)], NamingRule().position_regex())
    first = scanner.scan()
    assert [Path(x.path).name for x in first] == ["exp0", "exp1", "exp2"]
    assert scanner.listed == 1 + 3 * (1 + len(positions(demo)))
    time.sleep(2.1)  # past the racy window: the folders' times are old enough to trust
    scanner.scan()
    scanner.scan()
    assert scanner.listed == 0  # nothing changed: stat only, no folder listed again
    quiet = scanner.stats
    assert quiet == 1 + 3 * (1 + len(positions(demo))) + 3 * 2  # + the lab files
    src = next((demo / "pos001").iterdir())
    shutil.copyfile(src, root / "exp1" / "pos001" / "extra_000009_GFP_001.png")
    again = scanner.scan()
    assert scanner.listed == 1  # only exp1/pos001
    assert scanner.stats == quiet + 1  # and in it only the new file is stat'ed
    # A plane replaced under its own name (an atomic rewrite): the folder's names are the
    # same, so every file in it is stat'ed again and the change shows.
    time.sleep(2.1)
    before = {Path(x.path).name: x.signature for x in scanner.scan()}
    target = sorted((root / "exp2" / "pos002").iterdir())[3]
    tmp = tmp_path / "rewrite.png"
    tmp.write_bytes(target.read_bytes() + b"\0")
    os.replace(tmp, target)
    after = {Path(x.path).name: x.signature for x in scanner.scan()}
    assert [n for n in before if before[n] != after[n]] == ["exp2"]
    assert after["exp2"].size == before["exp2"].size + 1
    changed = {Path(x.path).name for x, y in zip(first, again, strict=True)
               if x.signature != y.signature}
    assert changed == {"exp1"}


# --- the readiness rules, each alone ---------------------------------------------------------


def test_ready_by_marker_alone(demo, tmp_path):
    root = tmp_path / "root"
    exp = full_experiment(demo, root / "run-marker", promise=288)  # log stops at 3
    assert watch_once(root, tmp_path, "--settle", "1h") == 0
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.ome.tiff"))
    (exp / MARKER).touch()
    assert watch_once(root, tmp_path, "--settle", "1h") == 0
    (line,) = reports(tmp_path / "reports")
    assert line["ready"]["rule"] == "marker" and line["status"] == "done"
    assert sorted(p.name for p in (tmp_path / "out" / "run-marker").glob("*.ome.tiff")) == [
        f"{p}.ome.tiff" for p in positions(demo)]


def test_ready_by_experiment_yml_complete(demo, tmp_path):
    root = tmp_path / "root"
    exp = full_experiment(demo, root / "run-yml", promise=288)
    (exp / "experiment.yml").write_text("complete: false\n")
    assert watch_once(root, tmp_path, "--settle", "1h") == 0
    assert reports(tmp_path / "reports") == []
    (exp / "experiment.yml").write_text("complete: true\n")
    assert watch_once(root, tmp_path, "--settle", "1h") == 0
    (line,) = reports(tmp_path / "reports")
    assert line["ready"] == {**line["ready"], "rule": "marker",
                             "detail": "experiment.yml says complete: true"}


def test_ready_by_log_count_alone(demo, tmp_path):
    n = len(timepoints(demo))
    root = tmp_path / "root"
    exp = full_experiment(demo, root / "run-log", promise=n)
    missing = exp / "pos002" / sorted(p.name for p in (exp / "pos002").iterdir())[-1]
    held = tmp_path / "held.png"
    shutil.move(missing, held)
    # The log says n of n, but a plane is not there: not ready (settle is an hour).
    assert watch_once(root, tmp_path, "--settle", "1h") == 0
    assert reports(tmp_path / "reports") == []
    shutil.move(held, missing)
    assert watch_once(root, tmp_path, "--settle", "1h") == 0
    (line,) = reports(tmp_path / "reports")
    assert line["ready"]["rule"] == "log"
    assert f"{n} of {n} time points completed" in line["ready"]["detail"]
    assert tiff_t(tmp_path / "out" / "run-log" / "pos001.ome.tiff") == n


def test_aborted_acquisition_finishes_by_the_quiet_rule(demo, tmp_path):
    """The Acq file promises 288 time points, the log stops at 3: only quiet makes it
    ready, once nothing changed for the settle time (counted across --once runs)."""
    root = tmp_path / "root"
    full_experiment(demo, root / "aborted", promise=288)
    assert watch_once(root, tmp_path, "--settle", "1.5s") == 0
    assert reports(tmp_path / "reports") == []
    time.sleep(1.6)
    assert watch_once(root, tmp_path, "--settle", "1.5s") == 0
    (line,) = reports(tmp_path / "reports")
    assert line["ready"]["rule"] == "quiet"
    assert f"log at {len(timepoints(demo))} of 288 time points" in line["ready"]["detail"]
    # Done: a third pass changes nothing and reports nothing new.
    assert watch_once(root, tmp_path, "--settle", "1.5s") == 0
    assert len(reports(tmp_path / "reports")) == 1


def test_source_is_never_written(demo, tmp_path):
    root = tmp_path / "root"
    full_experiment(demo, root / "ro", marker=True)
    (root / "ro" / "experiment.yml").write_text("complete: true\ndataset: ro-yaml\n")
    subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)
    try:
        before = tree_fingerprint(root)
        assert watch_once(root, tmp_path, "--dataset-from", "yaml") == 0
        assert watch_once(root, tmp_path, "--dataset-from", "yaml") == 0
        assert (tmp_path / "out" / "ro-yaml" / "pos001.ome.tiff").is_file()
        assert tree_fingerprint(root) == before
        # An output or report folder inside the watched tree is refused.
        assert main(["watch", str(root), "--to", "ome-tiff", "-o", str(root / "out"),
                     "--report-dir", str(tmp_path / "r2"), "--once"]) == 2
        assert tree_fingerprint(root) == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=True)


def test_one_watcher_per_report_folder(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    first = Watcher(WatchOptions(roots=[root], to="ome-tiff", report_dir=tmp_path / "r",
                                 output=tmp_path / "out"))
    try:
        assert main(["watch", str(root), "--to", "ome-tiff", "-o", str(tmp_path / "out"),
                     "--report-dir", str(tmp_path / "r"), "--once"]) == 1
        assert "another watcher is using this report folder" in capsys.readouterr().err
    finally:
        first.journal.close()
    assert main(["-q", "watch", str(root), "--to", "ome-tiff", "-o", str(tmp_path / "out"),
                 "--report-dir", str(tmp_path / "r"), "--once"]) == 0


def test_as_user_is_refused_with_a_clear_error(tmp_path, capsys):
    assert main(["watch", str(tmp_path), "--to", "omero", "--report-dir",
                 str(tmp_path.parent / f"r-{uuid.uuid4().hex[:6]}"), "--as-user", "yaml"]) == 2
    err = capsys.readouterr().err
    assert "--as-user is not available yet" in err and "sudo" in err


# --- failures -------------------------------------------------------------------------------


def test_failing_experiment_is_reported_backed_off_and_does_not_block_others(demo, tmp_path):
    root = tmp_path / "root"
    bad = full_experiment(demo, root / "a-bad", marker=True)
    good = root / "b-good"
    victim = sorted((bad / "pos002").iterdir())[4]
    data = victim.read_bytes()
    victim.unlink()  # (a hard link to the demo: never truncate the source itself)
    victim.write_bytes(data[: len(data) // 3])
    reports_dir = tmp_path / "reports"
    opts = WatchOptions(roots=[root], to="ome-tiff", report_dir=reports_dir,
                        output=tmp_path / "out", every_s=0.1, settle_s=3600, retry_s=1.5,
                        export_kwargs={"workers": 2})
    w = WatcherThread(Watcher(opts))
    w.start()
    wait_for(lambda: reports(reports_dir))  # the bad one failed once
    full_experiment(demo, good, marker=True)  # arrives while the bad one keeps failing
    wait_for(lambda: any(r["experiment"] == "b-good" and r["status"] == "done"
                         for r in reports(reports_dir)))
    time.sleep(1.0)
    w.stop()
    lines = reports(reports_dir)
    failed = [r for r in lines if r["experiment"] == "a-bad"]
    assert failed and all(r["status"] == "failed" for r in failed)
    assert str(victim) in failed[0]["error"] and "truncated" in failed[0]["error"]
    # Backed off: about 6 s of passes every 0.1 s, but 1.5 s, 3 s ... between tries.
    tries = [a for a in attempts(reports_dir) if a["path"] == str(bad)]
    assert 1 <= len(tries) <= 4, tries
    report = json.loads((reports_dir / "a-bad.json").read_text())
    assert report["status"] == "failed" and report["failures"] == len(tries)
    assert not (tmp_path / "out" / "a-bad" / "pos002.ome.tiff").exists()
    assert len(list((tmp_path / "out" / "b-good").glob("*.ome.tiff"))) == len(positions(demo))

    # Mended (the plane rewritten whole): a new signature clears the back-off.
    victim.unlink()
    victim.write_bytes(data)
    assert watch_once(root, tmp_path, "--settle", "1h") == 0
    assert json.loads((reports_dir / "a-bad.json").read_text())["status"] == "done"


def test_bad_sidecar_is_one_line_naming_the_file(demo, tmp_path):
    root = tmp_path / "root"
    exp = full_experiment(demo, root / "bad-yml", marker=True)
    (exp / "experiment.yml").write_text("colour: red\n")
    assert watch_once(root, tmp_path) == 1
    (line,) = reports(tmp_path / "reports")
    assert line["status"] == "failed"
    assert line["error"].startswith(str(exp / "experiment.yml"))
    assert "unknown key(s) colour" in line["error"] and "\n" not in line["error"]


# --- files: the simulated acquisition ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_simulated_acquisition_exported_once_after_the_last_timepoint(demo, tmp_path, fmt):
    if fmt == "ome-zarr":
        pytest.importorskip("zarr")
    root, out, reports_dir = tmp_path / "root", tmp_path / "out", tmp_path / "reports"
    root.mkdir()
    n = len(timepoints(demo))
    acq = Acquisition(demo, root / "sim", promise=n, pause=1.0)
    calls = []
    import pyomero_upload.experiment as experiment

    real = experiment.open_experiment

    def spy(*args, **kwargs):
        exp, meta = real(*args, **kwargs)
        calls.append((time.time(), exp.size_t, len(acq.written)))
        return exp, meta

    experiment.open_experiment = spy
    try:
        opts = WatchOptions(roots=[root], to=fmt, report_dir=reports_dir, output=out,
                            every_s=0.1, settle_s=60, export_kwargs={"workers": 2})
        w = WatcherThread(Watcher(opts))
        w.start()
        acq.start()
        acq.join(60)
        assert acq.error is None and acq.written == timepoints(demo)
        wait_for(lambda: reports(reports_dir))
        time.sleep(0.5)
        w.stop()
    finally:
        experiment.open_experiment = real
    assert len(calls) == 1, calls
    when, size_t, written = calls[0]
    assert size_t == n and written == n and when >= acq.finished_at
    (line,) = reports(reports_dir)
    assert line["ready"]["rule"] == "log" and line["status"] == "done"
    assert line["created"] == positions(demo)
    suffix = ".ome.tiff" if fmt == "ome-tiff" else ".ome.zarr"
    made = sorted((out / "sim").glob(f"*{suffix}"))
    assert [p.name for p in made] == [f"{p}{suffix}" for p in positions(demo)]
    assert [e["path"] for e in line["export"]["outputs"]] == [str(p) for p in made]
    if fmt == "ome-tiff":
        assert tiff_t(made[0]) == n
    else:
        meta = json.loads((made[0] / "0" / "zarr.json").read_text())
        assert meta["shape"][0] == n
    assert line["planes"] == sum(len(demo_planes(demo, p)) for p in positions(demo))
    assert line["planes_per_s"] > 0


def test_changed_after_done_is_a_new_version(demo, tmp_path):
    root = tmp_path / "root"
    exp = full_experiment(demo, root / "v", marker=True)
    assert watch_once(root, tmp_path) == 0
    plane = sorted((exp / "pos003").iterdir())[0]
    data = plane.read_bytes()
    plane.unlink()
    plane.write_bytes(data)  # rewritten: new time, same pixels
    os.utime(plane, ns=(plane.stat().st_atime_ns, plane.stat().st_mtime_ns + 10**9))
    assert watch_once(root, tmp_path) == 0
    first, second = reports(tmp_path / "reports")
    assert first["new_version"] is False and first["version"] == 1
    assert second["new_version"] is True and second["version"] == 2
    assert second["replaced"] == ["pos003"] and second["skipped"] == ["pos001", "pos002"]


# --- OMERO ---------------------------------------------------------------------------------


@pytest.fixture
def omero_user(double, monkeypatch):
    """A fresh user of the double, its password in OMERO_PASSWORD only."""
    import omero
    import omero.clients  # noqa: F401
    from omero.rtypes import rstring

    from pyomero_upload.omero import connection

    c = omero.client(double.host, double.port)
    try:
        admin = c.createSession(double.user, double.password).getAdminService()
        g = omero.model.ExperimenterGroupI()
        g.setName(rstring(f"watch-{uuid.uuid4().hex[:8]}"))
        gid = admin.createGroup(g)
        e = omero.model.ExperimenterI()
        name = f"watcher-{uuid.uuid4().hex[:8]}"
        e.setOmeName(rstring(name))
        e.setFirstName(rstring("W"))
        e.setLastName(rstring("Atcher"))
        password = f"secret-{uuid.uuid4().hex}"
        uid = admin.createExperimenterWithPassword(
            e, rstring(password), omero.model.ExperimenterGroupI(gid, False), [])
    finally:
        c.__del__()
    monkeypatch.setenv("OMERO_PASSWORD", password)
    for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_GROUP", "OMERO_SESSION_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(connection, "stored_session", lambda environ=None: None)
    return {"name": name, "password": password, "id": uid}


def connector(double, user):
    from pyomero_upload.omero.connection import Connection, ConnectionSettings

    settings = ConnectionSettings(double.host, double.port, user["name"], user["password"])
    return lambda: Connection.open(settings)


def server_view(double, user) -> dict:
    """The user's datasets, images (with T and completeness) from the double's state and
    the package's own completeness query."""
    from pyomero_upload.omero import queries

    state = double.state()
    objs = [o for o in state["objects"] if o["owner"] == user["id"]]
    datasets = {o["id"]: o["fields"]["name"] for o in objs if o["class"] == "Dataset"}
    links = [(o["fields"]["parent"]["id"], o["fields"]["child"]["id"]) for o in objs
             if o["class"] == "DatasetImageLink"]
    pixels = {o["fields"]["image"]["id"]: state["pixels"][str(o["id"])]["size"]
              for o in objs if o["class"] == "Pixels" and str(o["id"]) in state["pixels"]}
    images = {o["id"]: o["fields"]["name"] for o in objs if o["class"] == "Image"}
    complete: dict[int, bool] = {}
    if datasets:
        conn = connector(double, user)()
        try:
            for did in datasets:
                for img in queries.existing_images(conn, did):
                    complete[img.id] = img.complete
        finally:
            conn.close()
    return {"datasets": datasets, "links": links, "images": images, "pixels": pixels,
            "complete": complete, "state": state}


def test_simulated_acquisition_uploaded_once_after_the_last_timepoint(double, omero_user, demo,
                                                                      tmp_path):
    root, reports_dir = tmp_path / "root", tmp_path / "reports"
    root.mkdir()
    n = len(timepoints(demo))
    acq = Acquisition(demo, root / "sim-omero", promise=n, pause=1.5)
    calls = []
    import pyomero_upload.upload as upload

    real = upload.upload_experiment

    def spy(conn, exp, *args, **kwargs):
        calls.append((time.time(), exp.size_t, len(exp.missing), list(acq.written)))
        return real(conn, exp, *args, **kwargs)

    upload.upload_experiment = spy
    try:
        opts = WatchOptions(roots=[root], to="omero", report_dir=reports_dir, every_s=0.1,
                            settle_s=60, upload_kwargs={"workers": 2})
        w = WatcherThread(Watcher(opts, connect=connector(double, omero_user)))
        w.start()
        acq.start()
        wait_for(lambda: len(acq.written) >= n - 1, 60)
        time.sleep(0.5)  # several passes over a partial experiment
        assert server_view(double, omero_user)["images"] == {}  # nothing of it on the server
        acq.join(60)
        assert acq.error is None
        wait_for(lambda: reports(reports_dir))
        time.sleep(0.5)
        w.stop()
    finally:
        upload.upload_experiment = real
    assert len(calls) == 1, calls
    when, size_t, missing, written = calls[0]
    assert when >= acq.finished_at and size_t == n and missing == 0 and written == timepoints(demo)
    view = server_view(double, omero_user)
    assert list(view["datasets"].values()) == ["sim-omero"]
    assert sorted(view["images"].values()) == positions(demo)
    assert all(view["complete"][i] for i in view["images"])
    assert all(view["pixels"][i][4] == n for i in view["images"])  # T of every image
    (line,) = reports(reports_dir)
    assert line["status"] == "done" and line["ready"]["rule"] == "log"
    assert [a["status"] for a in attempts(reports_dir)] == ["ok"]


def test_ids_report_matches_the_server(double, omero_user, demo, tmp_path, capsys):
    root, reports_dir = tmp_path / "lab" / "stress", tmp_path / "reports"
    full_experiment(demo, root / "run-ids", marker=True)
    args = ["watch", str(tmp_path / "lab"), "--to", "omero", "--host", double.host,
            "--port", str(double.port), "--user", omero_user["name"], "--report-dir",
            str(reports_dir), "--once", "--json", "--project-from", "parent",
            "--web-url", "https://web.example.org/"]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out.strip())
    written = json.loads((reports_dir / "run-ids.json").read_text())
    (line,) = reports(reports_dir)
    assert printed == written == line
    view = server_view(double, omero_user)
    objects = {(o["class"], o["id"]): o for o in view["state"]["objects"]}
    d, p = written["omero"]["dataset"], written["omero"]["project"]
    assert objects[("Dataset", d["id"])]["fields"]["name"] == "run-ids" == d["name"]
    assert objects[("Project", p["id"])]["fields"]["name"] == "stress" == p["name"]
    assert d["url"] == f"https://web.example.org/webclient/?show=dataset-{d['id']}"
    ids = {i["id"] for i in written["omero"]["images"]}
    assert ids == set(view["images"]) == {c for par, c in view["links"] if par == d["id"]}
    for entry in written["omero"]["images"]:
        assert view["images"][entry["id"]] == entry["name"] and entry["status"] == "created"
        assert entry["url"].endswith(f"show=image-{entry['id']}")
    assert written["source"] == str(root / "run-ids") and written["seconds"] > 0
    # No secret anywhere: the report folder (journal included) and the log.
    for f in reports_dir.iterdir():
        assert omero_user["password"].encode() not in f.read_bytes(), f
    assert omero_user["password"] not in captured.err + captured.out
    # Re-run: everything skipped, nothing new reported, the ids the same.
    assert main(args) == 0
    assert len(reports(reports_dir)) == 1
    assert set(server_view(double, omero_user)["images"]) == ids


def test_experiments_of_one_pass_share_one_login(double, omero_user, demo, tmp_path):
    root = tmp_path / "root"
    for name in ("one", "two"):
        full_experiment(demo, root / name, marker=True)
    assert main(["-q", "watch", str(root), "--to", "omero", "--host", double.host, "--port",
                 str(double.port), "--user", omero_user["name"], "--report-dir",
                 str(tmp_path / "reports"), "--once"]) == 0
    assert sorted(server_view(double, omero_user)["datasets"].values()) == ["one", "two"]
    state = double.state()
    sessions = [x for x in state["sessions"] if x["user"] == omero_user["name"]]
    # The check at start, then one for the pass (and the test's own reading login).
    assert len(sessions) == 3 and not any(x["alive"] for x in sessions[:2])


def test_second_experiment_arriving_while_the_first_uploads(double, omero_user, demo, tmp_path):
    root, reports_dir = tmp_path / "root", tmp_path / "reports"
    full_experiment(demo, root / "first", marker=True)
    second = Acquisition(demo, root / "second", promise=None, pause=0.3, marker=True)
    import pyomero_upload.upload as upload

    real = upload.upload_experiment
    seen = []

    def spy(conn, exp, *args, **kwargs):
        seen.append((exp.root.name, exp.size_t, list(second.written)))
        if exp.root.name == "first":
            second.start()  # the second acquisition runs while the first uploads
            result = real(conn, exp, *args, **kwargs)
            second.join(60)
            return result
        return real(conn, exp, *args, **kwargs)

    upload.upload_experiment = spy
    try:
        opts = WatchOptions(roots=[root], to="omero", report_dir=reports_dir, every_s=0.1,
                            settle_s=60, upload_kwargs={"workers": 2})
        w = WatcherThread(Watcher(opts, connect=connector(double, omero_user)))
        w.start()
        wait_for(lambda: len(reports(reports_dir)) >= 2)
        time.sleep(0.5)
        w.stop()
    finally:
        upload.upload_experiment = real
    n = len(timepoints(demo))
    assert seen == [("first", n, []), ("second", n, timepoints(demo))]
    view = server_view(double, omero_user)
    assert sorted(view["datasets"].values()) == ["first", "second"]
    for did in view["datasets"]:
        mine = [c for p, c in view["links"] if p == did]
        assert sorted(view["images"][i] for i in mine) == positions(demo)
        assert all(view["complete"][i] for i in mine)
    assert [r["experiment"] for r in reports(reports_dir)] == ["first", "second"]


SLOW_PROCESSOR = '''
import time
from pyomero_upload import upload
from pyomero_upload.upload import DefaultImageProcessor

_real = upload.write_position


def _slow(*args, **kwargs):
    time.sleep(1.5)  # a slow network: time to kill the watcher mid-upload
    return _real(*args, **kwargs)


upload.write_position = _slow


class CustomImageProcessor(DefaultImageProcessor):
    pass
'''


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_watcher_killed_mid_upload_then_restarted(double, omero_user, demo, tmp_path, sig):
    """SIGKILL: the journal's running attempt is marked interrupted at the next start and
    the dead run's claim is seen as dead at once; SIGTERM: the watcher abandons the
    upload as Ctrl-C does and exits 0.  Either way the next start gives what an
    uninterrupted run gives, nothing twice."""
    root, reports_dir, mod = tmp_path / "root", tmp_path / "reports", tmp_path / "mod"
    full_experiment(demo, root / "killed", marker=True)
    mod.mkdir()
    (mod / "custom_image_processor.py").write_text(SLOW_PROCESSOR)
    cmd = [sys.executable, "-m", "pyomero_upload", "watch", str(root), "--to", "omero",
           "--host", double.host, "--port", str(double.port), "--user", omero_user["name"],
           "--report-dir", str(reports_dir), "--every", "0.2s", "--workers", "1",
           "-m", str(mod), "-i"]
    env = {**os.environ, "OMERO_PASSWORD": omero_user["password"],
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or server_view(double, omero_user)["images"],
                 90, 0.2)
        proc.send_signal(sig)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    view = server_view(double, omero_user)
    done_before = [i for i in view["images"] if view["complete"].get(i)]
    assert view["images"] and len(done_before) < len(positions(demo)), \
        "the upload finished before the signal"
    # Restarted: the same result as an uninterrupted run, nothing twice.
    done = subprocess.run([*cmd[:-3], "--once"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    view = server_view(double, omero_user)
    assert list(view["datasets"].values()) == ["killed"]
    assert sorted(view["images"].values()) == positions(demo)  # no duplicates left
    assert all(view["complete"][i] for i in view["images"])
    assert all(view["pixels"][i][4] == len(timepoints(demo)) for i in view["images"])
    assert [a["status"] for a in attempts(reports_dir)] == ["interrupted", "ok"]
    (line,) = reports(reports_dir)
    assert line["status"] == "done"
    assert omero_user["password"] not in done.stderr + done.stdout


def test_sigterm_while_idle_stops_cleanly(demo, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyomero_upload", "watch", str(root), "--to", "ome-tiff",
         "-o", str(tmp_path / "out"), "--report-dir", str(tmp_path / "reports"),
         "--every", "0.2s"], env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "reports" / "watch.sqlite").exists(), 30)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cluster_engine_is_passed_through(demo, tmp_path, monkeypatch):
    """--cluster local:1: the one engine, started once, runs each export's positions."""
    pytest.importorskip("distributed", reason="Dask distributed not installed (the test extra)")
    from pyomero_upload import engine as engine_mod

    tasks = []

    real_map = engine_mod.Engine.map_ordered

    def map_ordered(self, fn, items, keys):
        keys = list(keys)
        tasks.extend(keys)
        return real_map(self, fn, items, keys)

    monkeypatch.setattr(engine_mod.Engine, "map_ordered", map_ordered)
    root = tmp_path / "root"
    full_experiment(demo, root / "dask", marker=True)
    assert watch_once(root, tmp_path, "--cluster", "local:1", "--workers", "1") == 0
    assert tasks == [f"export-{p}" for p in positions(demo)]
    (line,) = reports(tmp_path / "reports")
    assert line["status"] == "done" and line["created"] == positions(demo)
    assert tiff_t(tmp_path / "out" / "dask" / "pos001.ome.tiff") == len(timepoints(demo))
