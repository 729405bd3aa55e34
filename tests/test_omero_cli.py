"""omero-py's own CLI (``omero.cli.argv``, in-process: ``bin/omero`` refuses root)
reads the uploaded demo from the OMERO double as it would from OMERO.

Each probe asserts the answer a real server gives for this data; a command the
double does not serve must fail with an error naming the service, never a
traceback of the double's own.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")

import omero.cli  # noqa: E402

from pyomero_upload.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def uploaded(double, demo, tmp_path_factory):
    """The demo uploaded once (as the double's admin), and its --json report."""
    import contextlib
    import io
    import os

    before = os.environ.get("OMERO_PASSWORD")
    os.environ["OMERO_PASSWORD"] = double.password
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert main(["-q", "upload", str(demo), "--dataset", "for-the-cli", "--project",
                         "cli-project", "--host", double.host, "--port", str(double.port),
                         "--user", double.user, "--json"]) == 0
    finally:
        if before is None:
            os.environ.pop("OMERO_PASSWORD", None)
        else:
            os.environ["OMERO_PASSWORD"] = before
    return json.loads(out.getvalue())


def cli(double, tmp_path, monkeypatch, *args: str) -> None:
    monkeypatch.setenv("OMERO_SESSIONDIR", str(tmp_path / "sessions"))
    try:
        omero.cli.argv(["omero", "-s", double.host, "-p", str(double.port), "-u", double.user,
                        "-w", double.password, *args])
    except SystemExit as exc:  # the CLI exits non-zero on a failed command
        if exc.code:
            raise AssertionError(f"omero {' '.join(args)} exited {exc.code}") from None


def test_hql_lists_the_datasets_images(double, uploaded, tmp_path, monkeypatch, capsys):
    did = uploaded["dataset"]["id"]
    cli(double, tmp_path, monkeypatch, "hql", "-q", "--style", "plain",
        f"select i.id, i.name from Image i join i.datasetLinks l where l.parent.id = {did} "
        "order by i.id")
    rows = [line.split(",") for line in capsys.readouterr().out.splitlines() if line]
    assert [(int(r[1]), r[2]) for r in rows] == [(e["id"], e["name"])
                                                  for e in uploaded["images"]]


def test_obj_get_answers_the_names(double, uploaded, tmp_path, monkeypatch, capsys):
    image = uploaded["images"][1]
    cli(double, tmp_path, monkeypatch, "obj", "get", f"Image:{image['id']}", "name")
    assert capsys.readouterr().out.strip().splitlines()[-1] == image["name"]
    cli(double, tmp_path, monkeypatch, "obj", "get", f"Dataset:{uploaded['dataset']['id']}",
        "name")
    assert capsys.readouterr().out.strip().splitlines()[-1] == "for-the-cli"


def test_delete_dry_run_reports_the_graph_and_keeps_it(double, uploaded, tmp_path,
                                                       monkeypatch, capsys):
    iid = uploaded["images"][0]["id"]
    cli(double, tmp_path, monkeypatch, "delete", "--report", "--dry-run", f"Image:{iid}")
    out = capsys.readouterr().out
    assert "Dry run performed" in out and "Unfinished" not in out
    assert f"Image:{iid}" in out and "Pixels:" in out and "PlaneInfo:" in out
    cli(double, tmp_path, monkeypatch, "obj", "get", f"Image:{iid}", "name")
    assert capsys.readouterr().out.strip().splitlines()[-1] == uploaded["images"][0]["name"]


def test_download_gives_the_attached_file_back(double, uploaded, demo, tmp_path, monkeypatch,
                                               capsys):
    import omero.clients
    from omero.rtypes import unwrap

    c = omero.client(double.host, double.port)
    try:
        q = c.createSession(double.user, double.password).getQueryService()
        params = omero.sys.ParametersI().addLong("did", uploaded["dataset"]["id"])
        links = q.findAllByQuery(
            "select l from DatasetAnnotationLink l join fetch l.child a "
            "where l.parent.id = :did", params)
        files = {unwrap(lk.child.getDescription()): unwrap(lk.child.file.id)
                 for lk in links if isinstance(lk.child, omero.model.FileAnnotationI)}
    finally:
        c.__del__()
    (acq,) = demo.glob("*Acq.txt")
    target = tmp_path / "downloaded.txt"
    cli(double, tmp_path, monkeypatch, "download", f"OriginalFile:{files[acq.name]}",
        str(target))
    assert target.read_bytes() == acq.read_bytes()


def test_an_unserved_command_names_what_is_missing(double, uploaded, tmp_path, monkeypatch):
    """`omero search` needs the search service (Lucene on a real server), which the
    double lacks: the error names it (an ApiUsageException), not an internal failure
    of the double."""
    with pytest.raises(omero.ApiUsageException,
                       match="createSearchService is not implemented"):
        cli(double, tmp_path, monkeypatch, "search", "Image", "pos001")
