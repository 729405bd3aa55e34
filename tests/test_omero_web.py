"""A stock OMERO.web (omero-web from PyPI, unmodified) shows what ``pyomero-upload
upload`` put into the OMERO double: its real login (guest check, CSRF token, login
form), the JSON API, the webclient's tree and right-hand panel, thumbnails and
rendered planes, a page in headless Chromium, and the JSON-API notebook.

Real clients are the judge of the double: each answer here is what the same client
shows for the same upload on a real OMERO.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")
pytest.importorskip("omeroweb", reason="omero-web is not installed (pip install omero-web, "
                                       "part of the test extra)")
requests = pytest.importorskip("requests")

from helpers import HAVE_REAL_DEMO  # noqa: E402
from pyomero_upload import demo_data as dd  # noqa: E402
from pyomero_upload.model import CLIENT_MAP_NS  # noqa: E402

# one OMERO.web and one upload per run: these tests on one xdist worker
pytestmark = [pytest.mark.omero_web, pytest.mark.xdist_group("omero_web")]

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TAGS = ["28-Sep-2018", "Batgirl"] if HAVE_REAL_DEMO else list(dd.TAGS)


def get(s, url: str, **params):
    r = s.get(url, params=params, timeout=120)
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:3000]}"
    return r.json()


# --- login and the JSON API --------------------------------------------------------------


def test_api_root_and_login(omero_web, web_session, demo_upload, double):
    versions = requests.get(f"{omero_web.url}/api/", timeout=60).json()["data"]
    assert versions[-1]["version"].startswith("0")
    api = web_session.api
    for key in ("url:token", "url:login", "url:projects", "url:datasets", "url:images",
                "url:servers"):
        assert key in api, key
    servers = get(web_session, api["url:servers"])["data"]
    assert [(s["id"], s["port"]) for s in servers] == [(1, double.port)]
    # the session is the user's: the API says who is logged in
    me = get(web_session, f"{omero_web.url}/api/v0/m/experimenters/{demo_upload.user_id}/")
    assert me["data"]["UserName"] == demo_upload.user


def test_api_lists_project_dataset_images(omero_web, web_session, demo_upload):
    up, api = demo_upload, web_session.api
    pid, pname = up.project
    did, dname = up.dataset
    projects = get(web_session, api["url:projects"], childCount="true")
    assert [(p["@id"], p["Name"]) for p in projects["data"]] == [(pid, pname)]
    assert projects["data"][0]["omero:childCount"] == 1
    assert projects["meta"]["totalCount"] == 1
    datasets = get(web_session, f"{omero_web.url}/api/v0/m/projects/{pid}/datasets/",
                   childCount="true")
    assert [(d["@id"], d["Name"], d["omero:childCount"]) for d in datasets["data"]] == [
        (did, dname, 3)]
    images = get(web_session, datasets["data"][0]["url:images"])
    assert [(i["@id"], i["Name"]) for i in images["data"]] == up.images
    assert images["meta"]["totalCount"] == 3
    for iid, name in up.images:
        image = get(web_session, f"{omero_web.url}/api/v0/m/images/{iid}/")["data"]
        assert image["Name"] == name and image["@id"] == iid
        px = image["Pixels"]
        assert (px["SizeX"], px["SizeY"], px["SizeZ"], px["SizeC"], px["SizeT"]) == \
            up.sizes[iid]
        assert px["Type"]["value"] == "uint16"
        if up.pixel_size[iid] is not None:
            assert px["PhysicalSizeX"]["Value"] == pytest.approx(up.pixel_size[iid])
            assert px["PhysicalSizeX"]["Unit"] == "MICROMETER"
        assert [ch.get("Name") for ch in px["Channels"]] == up.channels


def test_api_unknown_object_is_404(omero_web, web_session):
    r = web_session.get(f"{omero_web.url}/api/v0/m/images/987654321/", timeout=60)
    assert r.status_code == 404
    assert "not found" in r.json()["message"].lower()


# --- the webclient: tree and right-hand panel --------------------------------------------


def test_webclient_tree(omero_web, web_session, demo_upload):
    up, url = demo_upload, omero_web.url
    pid, pname = up.project
    did, dname = up.dataset
    # the tree's first level: the user's projects and orphaned datasets (OMERO.web 5.x
    # answers /webclient/api/containers/; there is no api/projects/ any more)
    top = get(web_session, f"{url}/webclient/api/containers/", id=up.user_id)
    projects = top["projects"]
    assert [(p["id"], p["name"], p["childCount"]) for p in projects] == [(pid, pname, 1)]
    assert projects[0]["ownerId"] == up.user_id
    assert "canEdit" in projects[0]["permsCss"]
    assert top["datasets"] == [] and top["screens"] == [] and top["plates"] == []
    assert top["orphaned"]["childCount"] == 0
    datasets = get(web_session, f"{url}/webclient/api/datasets/", id=pid)["datasets"]
    assert [(d["id"], d["name"], d["childCount"]) for d in datasets] == [(did, dname, 3)]
    images = get(web_session, f"{url}/webclient/api/images/", id=did)["images"]
    assert [(i["id"], i["name"]) for i in images] == up.images
    assert all(i["ownerId"] == up.user_id for i in images)
    sized = get(web_session, f"{url}/webclient/api/images/", id=did, sizeXYZ="true")
    assert [(i["sizeX"], i["sizeY"], i["sizeZ"]) for i in sized["images"]] == [
        up.sizes[iid][:3] for iid, _ in up.images]
    orphans = get(web_session, f"{url}/webclient/api/images/", orphaned="true",
                  experimenter_id=up.user_id)
    assert orphans["images"] == []
    groups = get(web_session, f"{url}/webclient/api/groups/")["groups"]
    assert any(g["id"] for g in groups)


def test_webclient_key_value_pairs_and_tags(omero_web, web_session, demo_upload):
    up, url = demo_upload, omero_web.url
    iid = up.images[0][0]
    maps = get(web_session, f"{url}/webclient/api/annotations/", type="map", image=iid)
    by_ns = {a["ns"]: a for a in maps["annotations"]}
    client = dict(map(tuple, by_ns[CLIENT_MAP_NS]["values"]))
    assert client, by_ns
    assert all(a["link"]["parent"]["id"] == iid for a in maps["annotations"])
    assert {e["id"] for e in maps["experimenters"]} == {up.user_id}
    tags = get(web_session, f"{url}/webclient/api/annotations/", type="tag", image=iid)
    assert sorted(a["textValue"] for a in tags["annotations"]) == sorted(TAGS)
    on_dataset = get(web_session, f"{url}/webclient/api/annotations/", type="map",
                     dataset=up.dataset[0])
    kv = [tuple(v) for a in on_dataset["annotations"] if a["ns"] == CLIENT_MAP_NS
          for v in a["values"]]
    assert ("Project", up.project[1]) in kv
    files = get(web_session, f"{url}/webclient/api/annotations/", type="file",
                dataset=up.dataset[0])["annotations"]
    names = {a["file"]["name"] for a in files}
    assert {"microscope1_Acq.txt", "microscope1_log.txt"} <= names
    # the dataset's panel (with its count of OMERO.tables on parents) renders
    r = web_session.get(f"{url}/webclient/metadata_details/dataset/{up.dataset[0]}/",
                        timeout=120)
    assert r.status_code == 200 and up.dataset[1] in r.text, r.text[:3000]


def test_right_hand_panel_of_an_image(omero_web, web_session, demo_upload):
    up, url = demo_upload, omero_web.url
    iid, name = up.images[0]
    r = web_session.get(f"{url}/webclient/metadata_details/image/{iid}/", timeout=120)
    assert r.status_code == 200, r.text[:3000]
    assert name in r.text and "Web User" in r.text  # the image and its owner
    for channel in up.channels:
        assert channel in r.text


def test_img_data_channels_and_windows(omero_web, web_session, demo_upload):
    """The viewer's settings: channel names, and each channel's window min/max the
    global min/max the upload set (IPixels.setChannelGlobalMinMax, a StatsInfo)."""
    from helpers import demo_planes, read_png

    up = demo_upload
    iid, name = up.images[2]
    data = get(web_session, f"{omero_web.url}/webgateway/imgData/{iid}/")
    assert data["id"] == iid and data["meta"]["imageName"] == name
    sx, sy, sz, sc, st = up.sizes[iid]
    assert (data["size"]["width"], data["size"]["height"], data["size"]["z"],
            data["size"]["c"], data["size"]["t"]) == (sx, sy, sz, sc, st)
    assert [c["label"] for c in data["channels"]] == up.channels
    planes = demo_planes(up.demo, name)
    for c, channel in enumerate(data["channels"]):
        values = [read_png(p) for _, cc, _, p in planes if cc == up.channels[c]]
        assert channel["window"]["min"] == min(v.min() for v in values)
        assert channel["window"]["max"] == max(v.max() for v in values)
        assert channel["active"] is True
    assert data["rdefs"]["defaultZ"] == sz // 2 and data["rdefs"]["defaultT"] == 0
    assert data["rdefs"]["model"] == "color"


# --- thumbnails and rendering -------------------------------------------------------------


def test_thumbnail_is_a_jpeg_of_the_image(omero_web, web_session, demo_upload):
    from PIL import Image

    iid = demo_upload.images[0][0]
    r = web_session.get(f"{omero_web.url}/webgateway/render_thumbnail/{iid}/", timeout=120)
    assert r.status_code == 200, r.text[:2000]
    assert r.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as im:
        assert max(im.size) == 96
        assert np.asarray(im.convert("L"), dtype=float).std() > 1  # not a blank placeholder


def test_render_image_is_the_plane(omero_web, web_session, demo_upload):
    from PIL import Image

    iid = demo_upload.images[0][0]
    r = web_session.get(f"{omero_web.url}/webgateway/render_image/{iid}/", timeout=120)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg", r.text[:2000]
    with Image.open(io.BytesIO(r.content)) as im:  # the default settings: 3 colours
        assert im.size == demo_upload.sizes[iid][:2] and im.mode == "RGB"

    iid, name = demo_upload.images[0]
    # channel 1 only, grey, the plane's own range, JPEG quality 1.0 (q): the rendered
    # plane is the source plane mapped linearly onto 0..255
    source = demo_upload.plane(name, 1, demo_upload.channels[0], 3).astype(float)
    lo, hi = source.min(), source.max()
    r = web_session.get(f"{omero_web.url}/webgateway/render_image/{iid}/2/0/", timeout=120,
                        params={"c": f"1|{lo:.0f}:{hi:.0f}$FFFFFF,-2,-3", "m": "g",
                                "q": "1.0", "format": "png"})
    assert r.status_code == 200, r.text[:2000]
    with Image.open(io.BytesIO(r.content)) as im:
        got = np.asarray(im.convert("L"), dtype=float)
    assert got.shape == source.shape
    expected = np.clip((source - lo) / (hi - lo) * 255, 0, 255)
    diff = np.abs(got - expected)
    assert diff.mean() < 1.0 and diff.max() <= 12  # JPEG at quality 100, then PNG
    # the channel window moves the mapping: half the range saturates twice as much
    r = web_session.get(f"{omero_web.url}/webgateway/render_image/{iid}/2/0/", timeout=120,
                        params={"c": f"1|{lo:.0f}:{(lo + hi) / 2:.0f}$FFFFFF,-2,-3", "m": "g",
                                "q": "1.0", "format": "png"})
    with Image.open(io.BytesIO(r.content)) as im:
        brighter = np.asarray(im.convert("L"), dtype=float)
    assert (brighter >= 250).mean() > (got >= 250).mean()


# --- a page in a browser ------------------------------------------------------------------


def test_webclient_page_in_chromium(omero_web, demo_upload, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromedriver") and (shutil.which("chromium")
                                                or shutil.which("chromium-browser"))):
        pytest.skip("chromium and chromedriver are not installed (Debian: chromium, "
                    "chromium-driver)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        driver.get(f"{omero_web.url}/webclient/login/")
        driver.find_element(By.ID, "id_username").send_keys(demo_upload.user)
        driver.find_element(By.ID, "id_password").send_keys(demo_upload.password)
        driver.find_element(By.CSS_SELECTOR, "input[type=submit],button[type=submit]").click()
        wait = WebDriverWait(driver, 120)
        wait.until(ec.presence_of_element_located((By.ID, "dataTree")))
        project = demo_upload.project[1]
        wait.until(ec.text_to_be_present_in_element((By.ID, "dataTree"), project))
        # open the project: its dataset appears under it
        anchor = driver.find_element(
            By.XPATH, f"//*[@id='dataTree']//*[contains(@class, 'jstree-anchor')]"
                      f"[contains(., '{project}')]")
        assert anchor.find_element(By.CLASS_NAME, "children_count").text == "1"
        anchor.find_element(By.XPATH, "../i[contains(@class, 'jstree-ocl')]").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "dataTree"),
                                                    demo_upload.dataset[1]))
        # the user's node shows their full name, as OMERO.web shows any user's
        assert "Web User" in driver.find_element(By.ID, "dataTree").text
        # select the dataset: the centre panel shows its images, each with its name and
        # its thumbnail (a JPEG from /webclient/get_thumbnails/, inlined)
        driver.find_element(
            By.XPATH, f"//*[@id='dataTree']//*[contains(@class, 'jstree-anchor')]"
                      f"[contains(., '{demo_upload.dataset[1]}')]").click()
        for iid, name in demo_upload.images:
            icon = wait.until(ec.presence_of_element_located((By.ID, f"image_icon-{iid}")))
            wait.until(lambda _d, icon=icon: (icon.find_element(By.TAG_NAME, "img")
                       .get_attribute("src") or "").startswith("data:image/jpeg;base64,"))
            assert name in icon.find_element(By.CLASS_NAME, "desc").get_attribute("textContent")
        # no script error and no failed request to OMERO.web (the login page also asks
        # api.github.com for OMERO.insight's releases, which this machine cannot reach)
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                and (e["source"] != "network" or omero_web.url in e["message"])]
        assert not logs, logs
    finally:
        driver.quit()


# --- the JSON-API notebook ----------------------------------------------------------------


def _alive(double, user: str) -> int:
    return sum(1 for s in double.state()["sessions"] if s["user"] == user and s["alive"])


def test_api_notebook_against_omero_web(omero_web, demo_upload, double, monkeypatch,
                                        tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("OMERO_WEB_URL", omero_web.url)
    monkeypatch.setenv("OMERO_USER", demo_upload.user)
    monkeypatch.setenv("OMERO_PASSWORD", demo_upload.password)
    monkeypatch.setenv("OMERO_WEB_SERVER_ID", "1")
    nb = nbformat.read(NOTEBOOKS / "omero_api.ipynb", as_version=4)
    before = _alive(double, demo_upload.user)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(
        out.get("text", "") or str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells for out in cell.get("outputs", []))
    assert "Traceback" not in text and "No OMERO.web address" not in text
    assert f"logged in as {demo_upload.user}" in text
    assert demo_upload.project[1] in text and demo_upload.dataset[1] in text
    for iid, name in demo_upload.images:
        assert name in text and str(iid) in text
    assert "Brightfield" in text and "logged out" in text
    # its login's OMERO session ended with its logout
    assert _alive(double, demo_upload.user) == before


def test_omero_web_logged_no_errors(omero_web):
    """Whatever the pages above asked of the double, OMERO.web logged no error (the
    docker-stacks rule: an error a user would see is a defect)."""
    errors = [line for line in omero_web.log.read_text().splitlines() if " ERROR " in line]
    assert not errors, "\n".join(errors[:20])
