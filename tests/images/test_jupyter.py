"""omero_jupyter: healthy server, token required, notebooks present and runnable,
and a real browser logging in."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from dockerutil import by_image, docker

#: The docker tier: `make test-images` runs it (`make test` leaves it out).
pytestmark = pytest.mark.docker

TOKEN = "pyomero-test-token-3f1c"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
NOTEBOOKS = {"omero_upload.ipynb", "omero_query.ipynb", "omero_api.ipynb"}


@pytest.fixture
def lab(image, containers):
    cid = containers.run(image, "start-jupyter.sh", opts=(
        "-p", "127.0.0.1::8888", "-e", f"JUPYTER_TOKEN={TOKEN}"))
    containers.wait_healthy(cid)
    return cid, f"http://127.0.0.1:{containers.port(cid, 8888)}"


@by_image("omero_jupyter")
def test_token_is_required(lab):
    _, url = lab
    assert requests.get(f"{url}/api/contents", timeout=10).status_code == 403
    r = requests.get(f"{url}/api/contents", headers={"Authorization": f"token {TOKEN}"},
                     timeout=10)
    assert r.status_code == 200
    assert {item["name"] for item in r.json()["content"]} >= NOTEBOOKS


@by_image("omero_jupyter")
def test_generated_token_printed_once(image, containers):
    cid = containers.run(image, "start-jupyter.sh", opts=("-p", "127.0.0.1::8888"))
    containers.wait_healthy(cid)
    logs = docker("logs", cid).stdout
    lines = [line for line in logs.splitlines() if line.startswith("JupyterLab token")]
    assert len(lines) == 1
    token = lines[0].rsplit(": ", 1)[1]
    url = f"http://127.0.0.1:{containers.port(cid, 8888)}"
    assert requests.get(f"{url}/api/contents", timeout=10).status_code == 403
    assert requests.get(f"{url}/api/contents?token={token}", timeout=10).status_code == 200


@by_image("omero_jupyter")
def test_notebook_executes_inside(lab):
    cid, _ = lab
    script = (
        "import nbformat, nbclient; "
        "nb = nbformat.read('/home/jovyan/work/omero_upload.ipynb', as_version=4); "
        "nbclient.NotebookClient(nb, timeout=600, resources={'metadata': {'path': '/tmp'}})"
        ".execute(); print('executed', len(nb.cells))"
    )
    r = docker("exec", "-e", "PYOMERO_OUTPUT=/tmp/out", "-e", "MPLBACKEND=Agg", cid,
               "python", "-c", script)
    assert "executed" in r.stdout
    files = docker("exec", cid, "bash", "-c", "ls /tmp/out/demo-experiment").stdout.split()
    assert files == ["metadata", "pos001.ome.tiff", "pos002.ome.tiff"]


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@by_image("omero_jupyter")
def test_browser_logs_in_and_sees_the_notebooks(lab):
    found = _chromium()
    if found is None:
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    _, url = lab
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=found[1])
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.get(f"{url}/lab")  # no token: the login page
        assert "token" in browser.page_source.lower() or "password" in browser.page_source.lower()
        browser.get(f"{url}/lab?token={TOKEN}")
        deadline = time.monotonic() + 90
        names: set[str] = set()
        while time.monotonic() < deadline and not names >= NOTEBOOKS:
            time.sleep(1)
            names = {e.text for e in browser.find_elements(
                By.CSS_SELECTOR, ".jp-DirListing-itemText")}
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / f"jupyterlab-{os.getpid()}.png"
        browser.save_screenshot(str(shot))
        assert names >= NOTEBOOKS, names
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()


# omero_jupyter only: the images built on it (omero_ide) add no notebook code
@pytest.mark.parametrize("image", ["omero_jupyter"], indirect=True)
def test_upload_notebook_uploads_to_the_omero_double(image, double):
    """The upload notebook, run headless (nbclient) inside the image, with OMERO_* set
    as a user would: it logs in over SSL and uploads its demo experiment."""
    d = double
    script = (
        "import nbformat, nbclient; "
        "nb = nbformat.read('/home/jovyan/work/omero_upload.ipynb', as_version=4); "
        "nbclient.NotebookClient(nb, timeout=600, resources={'metadata': {'path': '/tmp'}})"
        ".execute(); "
        "print('\\n'.join(o.get('text', '') for c in nb.cells for o in c.get('outputs', [])))"
    )
    r = docker("run", "--rm", "--network", "host", "-e", f"OMERO_HOST={d.host}",
               "-e", f"OMERO_PORT={d.port}", "-e", f"OMERO_USER={d.user}",
               "-e", f"OMERO_PASSWORD={d.password}", "-e", "PYOMERO_DATASET=jupyter-image",
               "-e", "PYOMERO_OUTPUT=/tmp/out", "-e", "MPLBACKEND=Agg", image,
               "python", "-c", script, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "No OMERO server is configured" not in r.stdout
    state = d.state()
    objs = state["objects"]
    (ds,) = [o for o in objs if o["class"] == "Dataset"
             and o["fields"]["name"] == "jupyter-image"]
    linked = {o["fields"]["child"]["id"] for o in objs
              if o["class"] == "DatasetImageLink" and o["fields"]["parent"]["id"] == ds["id"]}
    pixels = [state["pixels"][str(o["id"])] for o in objs if o["class"] == "Pixels"
              and o["fields"]["image"]["id"] in linked]
    # the notebook's own synthetic experiment: two positions, every plane written
    import hashlib

    assert len(pixels) == 2
    for held in pixels:
        x, y = held["size"][:2]
        zero = hashlib.sha1(bytes(x * y * 2)).hexdigest()
        assert all(h != zero for h in held["planes"].values())
    assert all(not s["alive"] for s in state["sessions"] if s["user"] == d.user)
