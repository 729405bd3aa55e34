"""Every notebook runs headless with no server; the offline outputs are checked."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from helpers import HAVE_REAL_DEMO
from pyomero_upload import demo_data

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, cwd: Path) -> str:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def not_blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as im:
        a = np.asarray(im.convert("L"), dtype=float)
    return a.std() > 10


@pytest.fixture
def offline(monkeypatch, tmp_path, demo):
    for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PASSWORD", "OMERO_WEB_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYOMERO_EXPERIMENT", str(demo))
    monkeypatch.setenv("PYOMERO_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("PYOMERO_EXPORT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def test_upload_and_query_notebooks_offline(offline):
    out = offline / "out"
    text = execute("omero_upload.ipynb", offline)
    assert "No OMERO server is configured" in text and "Exporting OME-TIFF instead" in text
    assert "wrote 3 file(s), 135 planes" in text
    assert sorted(p.name for p in (out / "demo").glob("*.ome.tiff")) == [
        "pos001.ome.tiff", "pos002.ome.tiff", "pos003.ome.tiff"]
    # the tags of the demo's log: the real one's, else those demo_data writes
    tags = "28-Sep-2018, Batgirl" if HAVE_REAL_DEMO else ", ".join(demo_data.TAGS)
    assert "Brightfield, DIC, GFP" in text and tags in text
    assert not_blank(out / "montage.png")

    text = execute("omero_query.ipynb", offline)
    assert "No OMERO server is configured" in text
    assert "Points" in text
    assert not_blank(out / "query-montage.png")
    assert not_blank(out / "stage-positions.png")


def test_api_notebook_offline(offline):
    text = execute("omero_api.ipynb", offline)
    assert "No OMERO.web address configured" in text
    assert "Traceback" not in text


def test_upload_notebook_makes_its_own_demo(offline, monkeypatch):
    monkeypatch.delenv("PYOMERO_EXPERIMENT")
    text = execute("omero_upload.ipynb", offline)
    assert "using a synthetic one" in text
    assert len(list((offline / "out" / "input" / "demo-experiment").glob("pos*"))) == 2
    assert not_blank(offline / "out" / "montage.png")


# --- against the OMERO double ------------------------------------------------------------


@pytest.fixture
def online(offline, monkeypatch, double):
    """The notebooks' OMERO_* settings pointing at the double (over SSL, as users have it)."""
    monkeypatch.setenv("OMERO_HOST", double.host)
    monkeypatch.setenv("OMERO_PORT", str(double.port))
    monkeypatch.setenv("OMERO_USER", double.user)
    monkeypatch.setenv("OMERO_PASSWORD", double.password)
    monkeypatch.setenv("OMERO_SESSIONDIR", str(offline / "sessions"))  # no stored session
    monkeypatch.setenv("PYOMERO_DATASET", "notebook-run")
    return double


def test_upload_then_query_notebooks_against_the_double(online, offline, demo):
    earlier = {s["uuid"] for s in online.state()["sessions"]}
    text = execute("omero_upload.ipynb", offline)
    assert "No OMERO server is configured" not in text
    assert "uploaded 3 image(s), 135 planes" in text, text[-2000:]
    state = online.state()
    (dataset,) = [o for o in state["objects"] if o["class"] == "Dataset"
                  and o["fields"].get("name") == "notebook-run"]
    # the double is shared by the whole run: the notebook's images are its dataset's
    ids = {o["fields"]["child"]["id"] for o in state["objects"]
           if o["class"] == "DatasetImageLink" and o["fields"]["parent"]["id"] == dataset["id"]}
    images = sorted(o["fields"]["name"] for o in state["objects"]
                    if o["class"] == "Image" and o["id"] in ids)
    assert images == ["pos001", "pos002", "pos003"]
    # every plane the notebook sent is its source's (SHA-1 of the big-endian bytes)
    import hashlib

    from helpers import demo_planes, read_png

    pixels = {o["fields"]["image"]["id"]: o["id"] for o in state["objects"]
              if o["class"] == "Pixels" and o["fields"]["image"]["id"] in ids}
    names = {o["id"]: o["fields"]["name"] for o in state["objects"] if o["class"] == "Image"}
    for iid, pid in pixels.items():
        planes = state["pixels"][str(pid)]["planes"]
        for t, c, z, src in demo_planes(demo, names[iid]):
            ci = ["Brightfield", "DIC", "GFP"].index(c)
            want = hashlib.sha1(read_png(src).astype(">u2").tobytes()).hexdigest()
            assert planes[f"{z - 1},{ci},{t - 1}"] == want
    # the notebook's own sessions are all ended (Glacier2 ends them asynchronously)
    deadline = time.monotonic() + 60
    while any(s["alive"] for s in state["sessions"] if s["uuid"] not in earlier):
        assert time.monotonic() < deadline, "a session of the notebook is still alive"
        time.sleep(0.2)
        state = online.state()
    assert dataset["annotations"]

    text = execute("omero_query.ipynb", offline)
    assert "No OMERO server is configured" not in text and "Traceback" not in text
    assert "pos001" in text
    assert not_blank(offline / "out" / "query-montage.png")
