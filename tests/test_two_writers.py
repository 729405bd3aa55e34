"""One description, two writers: OMERO and the OME-TIFF carry the same facts.

The demo is uploaded to the OMERO double (the real ``omero.client`` over SSL)
and exported as OME-TIFF; everything both can hold is read back from each
(OMERO through IQuery, the file through ome-types) and compared.
"""

from __future__ import annotations

import pytest
import tifffile
from ome_types import from_xml

from pyomero_upload.cli import main

pytest.importorskip("omero", reason="the OMERO double needs omero-py ([omero] extra)")

import omero  # noqa: E402
import omero.all  # noqa: E402,F401  (loads every model class, and omero.sys.ParametersI)
from omero.rtypes import unwrap  # noqa: E402
from omero.sys import ParametersI  # noqa: E402

from pyomero_upload.model import CLIENT_MAP_NS, PROVENANCE_NS  # noqa: E402
from pyomero_upload.testing.omero_double import running_double  # noqa: E402

#: Provenance pairs that legitimately differ: the action's name and time.
ACTION_KEYS = {"Exported With", "Uploaded With", "Export time", "Upload time",
               "Source checksum"}


def _length(value):
    return None if value is None else round(value.getValue(), 6)


def _from_omero(sf, dataset_id: int) -> dict[str, dict]:
    query = sf.getQueryService()
    images = query.findAllByQuery(
        "select i from Image i join i.datasetLinks l where l.parent.id = :did order by i.id",
        ParametersI().addLong("did", dataset_id))
    out = {}
    for image in images:
        iid = image.id.val
        px = query.findByQuery(
            "select p from Pixels p join fetch p.pixelsType join fetch p.channels c "
            "join fetch c.logicalChannel where p.image.id = :iid",
            ParametersI().addLong("iid", iid))
        channels = []
        for ch in px.copyChannels():
            lc = ch.getLogicalChannel()
            rgba = [unwrap(getattr(ch, f"get{k}")()) for k in ("Red", "Green", "Blue", "Alpha")]
            channels.append((unwrap(lc.name), tuple(rgba[:3]),
                             _length(lc.getExcitationWave()), _length(lc.getEmissionWave())))
        planes = query.findAllByQuery(
            "select pi from PlaneInfo pi where pi.pixels.id = :pid",
            ParametersI().addLong("pid", px.id.val))
        links = query.findAllByQuery(
            "select l from ImageAnnotationLink l join fetch l.child where l.parent.id = :iid",
            ParametersI().addLong("iid", iid))
        maps, tags = {}, []
        for link in links:
            ann = link.child
            if type(ann).__name__ == "TagAnnotationI":
                tags.append(unwrap(ann.getTextValue()))
            elif type(ann).__name__ == "MapAnnotationI":
                maps[unwrap(ann.getNs())] = [(nv.name, nv.value) for nv in ann.getMapValue()]
        img = query.findByQuery("select i from Image i where i.id = :iid",
                                ParametersI().addLong("iid", iid))
        out[unwrap(image.name)] = {
            "size": (unwrap(px.sizeX), unwrap(px.sizeY), unwrap(px.sizeZ), unwrap(px.sizeC),
                     unwrap(px.sizeT)),
            "type": unwrap(px.getPixelsType().getValue()),
            "physical_z": _length(px.getPhysicalSizeZ()),
            "time_increment": _length(px.getTimeIncrement()),
            "channels": channels,
            "planes": sorted(
                (unwrap(p.theZ), unwrap(p.theC), unwrap(p.theT), _length(p.getDeltaT()),
                 _length(p.getExposureTime()), _length(p.getPositionX()),
                 _length(p.getPositionY()), _length(p.getPositionZ()))
                for p in planes),
            "date_ms": unwrap(img.getAcquisitionDate()),
            "description": unwrap(img.getDescription()),
            "tags": sorted(tags),
            "kvps": maps.get(CLIENT_MAP_NS),
            "provenance": [kv for kv in maps.get(PROVENANCE_NS, []) if kv[0] not in ACTION_KEYS],
        }
    return out


def _from_ome_tiff(path) -> dict:
    with tifffile.TiffFile(path) as tif:
        ome = from_xml(tif.ome_metadata, validate=True)
    image = ome.images[0]
    px = image.pixels
    sa = ome.structured_annotations
    maps = {m.namespace: [(kv.k, kv.value) for kv in m.value.ms] for m in sa.map_annotations}

    def rnd(v):
        return None if v is None else round(v, 6)

    return {
        "size": (px.size_x, px.size_y, px.size_z, px.size_c, px.size_t),
        "type": px.type.value,
        "physical_z": rnd(px.physical_size_z),
        "time_increment": rnd(px.time_increment),
        "channels": [(c.name, c.color.as_rgb_tuple()[:3] if c.color else None,
                      rnd(c.excitation_wavelength), rnd(c.emission_wavelength))
                     for c in px.channels],
        "planes": sorted(
            (p.the_z, p.the_c, p.the_t, rnd(p.delta_t), rnd(p.exposure_time),
             rnd(p.position_x), rnd(p.position_y), rnd(p.position_z)) for p in px.planes),
        "date_ms": int(image.acquisition_date.timestamp() * 1000)
        if image.acquisition_date else None,
        "description": image.description,
        "tags": sorted(t.value for t in sa.tag_annotations),
        "kvps": maps.get(CLIENT_MAP_NS),
        "provenance": [kv for kv in maps.get(PROVENANCE_NS, []) if kv[0] not in ACTION_KEYS],
    }


def test_omero_and_ome_tiff_carry_the_same_facts(demo, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(["-q", "export", str(demo), "-o", str(out), "--dataset", "two"]) == 0
    with running_double(tmp_path / "double") as d:
        monkeypatch.setenv("OMERO_PASSWORD", d.password)
        assert main(["-q", "upload", str(demo), "--host", d.host, "--port", str(d.port),
                     "--user", d.user, "--dataset", "two"]) == 0
        client = omero.client(d.host, d.port)
        try:
            sf = client.createSession(d.user, d.password)
            dataset = sf.getQueryService().findByQuery(
                "select d from Dataset d where d.name = :name",
                ParametersI().addString("name", "two"))
            in_omero = _from_omero(sf, dataset.id.val)
        finally:
            client.closeSession()
    files = sorted((out / "two").glob("*.ome.tiff"))
    assert sorted(in_omero) == [f.name.removesuffix(".ome.tiff") for f in files]
    for f in files:
        in_file = _from_ome_tiff(f)
        in_db = in_omero[f.name.removesuffix(".ome.tiff")]
        assert in_file["planes"] and in_file["channels"] and in_file["tags"]
        assert in_file["provenance"] and in_file["kvps"]
        for key in in_file:
            assert in_db[key] == in_file[key], f"{f.name}: {key} differs"
