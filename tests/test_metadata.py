"""The Acq/log parser, sidecars, plug-ins, and metadata in the OME-TIFF output."""

from __future__ import annotations

import json
import logging
import re
import tracemalloc
from datetime import datetime
from importlib.metadata import EntryPoint

import pandas as pd
import pytest
import tifffile
from ome_types import from_xml

from helpers import SYNTHETIC, copy_lab_files
from pyomero_upload import demo_data as dd
from pyomero_upload.cli import main
from pyomero_upload.errors import InputError
from pyomero_upload.metadata import load_metadata
from pyomero_upload.model import CLIENT_MAP_NS, ExperimentMetadata
from pyomero_upload.plugins import registry
from pyomero_upload.plugins.acqlog import ACQ_SECTIONS, LOG_FIELDS, AcqLogParser

N_POSITIONS, N_TIMEPOINTS = SYNTHETIC["positions"], SYNTHETIC["timepoints"]
SYNTHETIC_GFP = next(c for c in dd.CHANNELS if c.name == "GFP")


@pytest.fixture
def lab_files(demo, tmp_path):
    """A folder with copies of the demo's Acq and log files only."""
    return copy_lab_files(demo, tmp_path / "lab")


@pytest.fixture
def real_lab_files(real_demo, tmp_path):
    """A folder with copies of the real demo's Acq and log files only."""
    return copy_lab_files(real_demo, tmp_path / "lab")


@pytest.fixture
def synthetic_lab_files(synthetic, tmp_path):
    """A folder with copies of the synthetic experiment's Acq and log files only."""
    return copy_lab_files(synthetic, tmp_path / "lab")


def parse(root) -> ExperimentMetadata:
    return AcqLogParser().extract_metadata(root)


@pytest.mark.real_data
def test_demo_values(real_demo):
    meta = parse(real_demo)
    acq = meta.acquisition
    assert [(c.name, c.exposure_ms) for c in acq.channels] == [
        ("Brightfield", 30.0), ("DIC", 30.0), ("GFP", 60.0)
    ]
    assert meta.tables["Z_sectioning"]["Sections"].iloc[0] == 5
    assert acq.z_spacing_um == pytest.approx(0.60)
    assert (acq.time_interval_s, acq.n_timepoints, acq.duration_s) == (300, 288, 86400)
    assert len(acq.positions) == 25
    p1 = acq.positions["pos001"]
    assert (p1.x_um, p1.y_um, p1.z_um) == (10846.50, 10208.10, 3431.425)
    assert p1.group == "1" and p1.exposures_ms == {"Brightfield": 30, "DIC": 30, "GFP": 7}
    pumps = meta.tables["Pumps"]
    assert list(pumps["Contents"]) == ["2% glucose in SC", "No media"]
    assert ("Pumps", "2") in meta.kvps
    assert meta.tags == ["28-Sep-2018", "Batgirl"]
    assert meta.project == "Morphology detection"
    assert [v for k, v in meta.kvps if k == "Strain"] == [
        "Mig1-GFP", "Dot6-GFP", "Maf1-GFP", "Sfp1-GFP", "Msn2-GFP"
    ]
    assert [v for k, v in meta.kvps if k == "Author"] == ["Julian Pietsch", "Ivan Clark"]
    assert ("Micromanager config file",
            r"C:\Users\Public\Microscope control\Micromanager config files"
            r"\Batgirl5_9_18noemissionfilter.txt") in meta.kvps
    assert acq.started == datetime(2018, 9, 28, 17, 18, 14)
    assert acq.microscope == "Microscope1"
    gfp = acq.channel("GFP")
    assert (gfp.excitation_nm, gfp.emission_nm) == (470, 535)
    assert "Aim: Compare morphology markers across microscopes" in meta.description
    assert "Strains: Mig1-GFP, Dot6-GFP" in meta.description
    assert [f.name for f in meta.attachments] == ["microscope1_Acq.txt", "microscope1_log.txt"]


def test_synthetic_values(synthetic):
    """test_demo_values' twin: every value demo_data wrote is read back."""
    meta = parse(synthetic)
    acq = meta.acquisition
    assert [(c.name, c.exposure_ms) for c in acq.channels] == [
        (c.name, c.exposure_ms) for c in dd.CHANNELS
    ]
    assert meta.tables["Z_sectioning"]["Sections"].iloc[0] == SYNTHETIC["z_sections"]
    assert acq.z_spacing_um == pytest.approx(dd.Z_SPACING_UM)
    assert (acq.time_interval_s, acq.n_timepoints, acq.duration_s) == (
        dd.INTERVAL_S, N_TIMEPOINTS, dd.INTERVAL_S * N_TIMEPOINTS
    )
    assert list(acq.positions) == [f"pos{i + 1:03d}" for i in range(N_POSITIONS)]
    for i, p in enumerate(acq.positions.values()):
        x, y, z, group, exposures = dd.stage_position(i)
        assert (p.x_um, p.y_um, p.z_um) == (x, y, z)
        assert p.group == str(group) and p.exposures_ms == exposures
    assert acq.positions["pos001"].exposures_ms["GFP"] != SYNTHETIC_GFP.exposure_ms
    pumps = meta.tables["Pumps"]
    assert list(pumps["Contents"]) == [pump[-1] for pump in dd.PUMPS]
    assert ("Pumps", str(len(dd.PUMPS))) in meta.kvps
    assert meta.tags == list(dd.TAGS)
    assert meta.project == dd.PROJECT
    assert [v for k, v in meta.kvps if k == "Strain"] == list(dd.STRAINS)
    assert [v for k, v in meta.kvps if k == "Author"] == list(dd.AUTHORS)
    assert ("Micromanager config file", dd.CONFIG_FILE) in meta.kvps  # colons and all
    assert acq.started == dd.START
    assert acq.microscope == dd.MICROSCOPE
    for c in dd.CHANNELS:
        info = acq.channel(c.name)
        assert (info.excitation_nm, info.emission_nm) == (c.excitation_nm, c.emission_nm)
    assert (SYNTHETIC_GFP.excitation_nm, SYNTHETIC_GFP.emission_nm) == (470, 535)
    assert f"Aim: {dd.AIM}" in meta.description
    assert f"Strains: {', '.join(dd.STRAINS)}" in meta.description
    assert [f.name for f in meta.attachments] == ["microscope1_Acq.txt", "microscope1_log.txt"]


def test_clean_values_no_duplicates(demo):
    meta = parse(demo)
    for k, v in meta.kvps:
        assert not re.search(r"^\[.*\]$|\['|'\]", v), (k, v)
        assert v.strip() == v and v
    assert len(meta.kvps) == len(set(meta.kvps))
    assert ("Channel GFP light path", "470nm LED") in meta.kvps


@pytest.mark.real_data
def test_typed_tables(real_demo):
    t = parse(real_demo).tables
    assert t["Channels"]["Channel name"].tolist() == ["Brightfield", "DIC", "GFP"]
    assert str(t["Channels"]["Exposure time"].dtype) == "int64"
    assert str(t["Channels"]["Voltage"].dtype) == "float64"
    assert str(t["Points"]["X position"].dtype) == "float64"
    assert str(t["Points"]["Group"].dtype) == "int64"
    assert t["Pumps"]["Direction"].tolist() == ["INF", "INF"]  # text, not infinity
    assert t["Time_settings"].iloc[0].tolist() == [1, 300, 288, 86400]
    sw = t["Switching_parameters"]
    assert sw[sw.Parameter == "Flow post switch"]["Value"].tolist() == [0.4, 4.0]


def test_typed_tables_synthetic(synthetic):
    t = parse(synthetic).tables
    assert t["Channels"]["Channel name"].tolist() == [c.name for c in dd.CHANNELS]
    assert str(t["Channels"]["Exposure time"].dtype) == "int64"
    assert str(t["Channels"]["Voltage"].dtype) == "float64"
    assert str(t["Points"]["X position"].dtype) == "float64"
    assert str(t["Points"]["Group"].dtype) == "int64"
    assert t["Pumps"]["Direction"].tolist() == [pump[3] for pump in dd.PUMPS]
    assert t["Pumps"]["Direction"].tolist() == ["INF", "INF"]  # text, not infinity
    assert t["Time_settings"].iloc[0].tolist() == [
        1, dd.INTERVAL_S, N_TIMEPOINTS, dd.INTERVAL_S * N_TIMEPOINTS
    ]
    sw = t["Switching_parameters"]
    assert sw[sw.Parameter == "Flow post switch"]["Value"].tolist() == list(dd.FLOW_POST_SWITCH)


def test_parsing_twice_is_equal(demo):
    a, b = parse(demo), parse(demo)
    assert a.to_dict() == b.to_dict()
    assert a.kvps == b.kvps
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])


@pytest.mark.real_data
def test_plane_times_from_the_machine_log(real_demo):
    offsets = parse(real_demo).acquisition.plane_offsets_s
    assert offsets["pos001"][(1, "Brightfield")] == 1.0  # 17:18:15
    assert offsets["pos001"][(1, "GFP")] == 8.0  # 17:18:22
    assert offsets["pos002"][(1, "Brightfield")] == 12.0  # 17:18:26


def test_plane_times_from_the_machine_log_synthetic(synthetic):
    offsets = parse(synthetic).acquisition.plane_offsets_s
    assert offsets == {
        f"pos{p + 1:03d}": {
            (t + 1, c.name): float(dd.plane_offset_s(t, p, ci))
            for t in range(N_TIMEPOINTS) for ci, c in enumerate(dd.CHANNELS)
        }
        for p in range(N_POSITIONS)
    }


def drop_log_field(lab_files, caplog, field) -> ExperimentMetadata:
    """Parse ``lab_files`` with ``field`` and its lines removed from the log."""
    log = lab_files / "microscope1_log.txt"
    lines = log.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(field + ":"))
    end = start + 1
    known = tuple(f + ":" for f in LOG_FIELDS)
    while end < len(lines) and not lines[end].startswith(known + ("PFS", "------")):
        end += 1
    log.write_text("\n".join(lines[:start] + lines[end:]))
    with caplog.at_level(logging.WARNING):
        meta = parse(lab_files)
    assert f"field {field}: missing" in caplog.text
    return meta


@pytest.mark.real_data
@pytest.mark.parametrize("field", LOG_FIELDS)
def test_log_without_each_field(real_lab_files, caplog, field):
    meta = drop_log_field(real_lab_files, caplog, field)
    assert len(meta.acquisition.positions) == 25  # the rest still parsed


@pytest.mark.parametrize("field", LOG_FIELDS)
def test_log_without_each_field_synthetic(synthetic_lab_files, caplog, field):
    meta = drop_log_field(synthetic_lab_files, caplog, field)
    assert len(meta.acquisition.positions) == N_POSITIONS  # the rest still parsed


def drop_acq_section(lab_files, caplog, section) -> ExperimentMetadata:
    """Parse ``lab_files`` with ``section`` removed from the Acq file."""
    acq = lab_files / "microscope1_Acq.txt"
    text = acq.read_text()
    names = [s + ":" for s in ACQ_SECTIONS]
    start = text.index(section + ":")
    later = [text.index(n) for n in names if text.index(n) > start]
    text = text[:start] + (text[min(later):] if later else "")
    acq.write_text(text)
    with caplog.at_level(logging.WARNING):
        meta = parse(lab_files)
    assert f"section {section}: missing" in caplog.text
    return meta


@pytest.mark.real_data
@pytest.mark.parametrize("section", ACQ_SECTIONS)
def test_acq_without_each_section(real_lab_files, caplog, section):
    meta = drop_acq_section(real_lab_files, caplog, section)
    assert meta.tags == ["28-Sep-2018", "Batgirl"]


@pytest.mark.parametrize("section", ACQ_SECTIONS)
def test_acq_without_each_section_synthetic(synthetic_lab_files, caplog, section):
    meta = drop_acq_section(synthetic_lab_files, caplog, section)
    assert meta.tags == list(dd.TAGS)  # the log still parsed
    assert len(meta.acquisition.plane_offsets_s) == N_POSITIONS


@pytest.mark.parametrize("newline", ["\n", "\r", "\r\n"])
def test_line_endings(demo, lab_files, newline):
    for f in lab_files.glob("*.txt"):
        text = f.read_bytes().decode().replace("\r\n", "\n").replace("\r", "\n")
        f.write_bytes(text.replace("\n", newline).encode())
    assert parse(lab_files).to_dict() == {
        **parse(demo).to_dict(),
        "attachments": [str(p) for p in sorted(lab_files.glob("*.txt"))],
    }


@pytest.mark.real_data
def test_latin1_bytes(real_lab_files, caplog):
    log = real_lab_files / "microscope1_log.txt"
    data = log.read_bytes().replace(b"Low OD O/N.", b"Spacing 5 \xb5m.")
    log.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        meta = parse(real_lab_files)
    assert ("Comments", "Spacing 5 µm. Log growth from OD0.1 for four hours.") in meta.kvps
    assert "not UTF-8" in caplog.text


def test_latin1_bytes_synthetic(synthetic_lab_files, caplog):
    log = synthetic_lab_files / "microscope1_log.txt"
    first, rest = dd.COMMENTS.split(" ", 1)
    data = log.read_bytes().replace(first.encode(), b"Spacing 5 \xb5m.")
    log.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        meta = parse(synthetic_lab_files)
    assert ("Comments", f"Spacing 5 µm. {rest}") in meta.kvps
    assert "not UTF-8" in caplog.text


def test_empty_files(lab_files, caplog):
    for f in lab_files.glob("*.txt"):
        f.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        meta = parse(lab_files)
    assert meta.kvps == [] and meta.tables == {}
    assert "section Channels: missing" in caplog.text


def test_no_lab_files_is_no_metadata(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        meta = load_metadata(tmp_path)
    assert meta.to_dict() == ExperimentMetadata().to_dict()
    assert caplog.text.count("no metadata") == 1


def test_large_log_is_streamed(lab_files):
    log = lab_files / "microscope1_log.txt"
    text = log.read_text()
    head, body = text.split("------Time point_1------", 1)
    body = "------Time point_1------" + body
    with open(log, "w", newline="") as fh:
        fh.write(head)
        size, copies = len(head), 0
        while size < 50_000_000:
            fh.write(body.replace("Time point_1-", f"Time point_{copies + 1}-"))
            size += len(body)
            copies += 1
    tracemalloc.start()
    meta = parse(lab_files)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert log.stat().st_size > 50_000_000
    assert peak < 30_000_000  # far below the file's size: not read whole
    assert (copies, "GFP") in meta.acquisition.plane_offsets_s["pos003"]


# --- sidecars -----------------------------------------------------------------

SIDECAR = """
description: Sidecar description
project: Sidecar project
tags: [yaml-tag, Batgirl]
kvps:
  Strain: [Mig1-GFP, Dot6-GFP]
  Medium: 2% glucose
acquisition:
  microscope: Scope2
  started: 2020-01-02 03:04:05
  pixel_size_um: 0.182
  z_spacing_um: 0.5
  time_interval_s: 120
  channels:
    - {name: GFP, exposure_ms: 50, emission_nm: 510, color: "#00FF00"}
    - {name: mCherry, exposure_ms: 80}
  positions:
    - {name: pos001, x_um: 1.5, y_um: 2.5, z_um: 3.5, group: A, exposures_ms: {GFP: 50}}
tables:
  Doses: doses.csv
  Media: {columns: [Port, Contents], rows: [[COM5, glucose]]}
"""


def test_yaml_sidecar_alone(tmp_path):
    (tmp_path / "experiment.yml").write_text(SIDECAR)
    (tmp_path / "doses.csv").write_text("T,Dose\n1,0.5\n2,1.0\n")
    meta = load_metadata(tmp_path)
    acq = meta.acquisition
    assert meta.description == "Sidecar description" and meta.project == "Sidecar project"
    assert meta.tags == ["yaml-tag", "Batgirl"]
    assert meta.kvps == [("Strain", "Mig1-GFP"), ("Strain", "Dot6-GFP"), ("Medium", "2% glucose")]
    assert acq.started == datetime(2020, 1, 2, 3, 4, 5) and acq.pixel_size_um == 0.182
    assert acq.channel("GFP").color == (0, 255, 0) and acq.channel("GFP").emission_nm == 510
    assert acq.positions["pos001"].exposures_ms == {"GFP": 50.0}
    assert meta.tables["Doses"]["Dose"].tolist() == [0.5, 1.0]
    assert meta.tables["Media"].iloc[0].tolist() == ["COM5", "glucose"]


def test_json_sidecar(tmp_path):
    (tmp_path / "experiment.json").write_text(json.dumps({
        "tags": ["a"], "kvps": [["k", "v"]], "acquisition": {"z_spacing_um": 0.3}
    }))
    meta = load_metadata(tmp_path, parser="sidecar")
    assert meta.tags == ["a"] and meta.kvps == [("k", "v")]
    assert meta.acquisition.z_spacing_um == 0.3


def merge_sidecar(lab_files, caplog) -> ExperimentMetadata:
    """The metadata of ``lab_files`` plus SIDECAR (which must say that it wins)."""
    (lab_files / "experiment.yml").write_text(SIDECAR)
    (lab_files / "doses.csv").write_text("T,Dose\n1,0.5\n")
    with caplog.at_level(logging.WARNING):
        meta = load_metadata(lab_files)
    assert "sidecar wins" in caplog.text
    return meta


@pytest.mark.real_data
def test_sidecar_merges_over_lab_files(real_lab_files, caplog):
    meta = merge_sidecar(real_lab_files, caplog)
    acq = meta.acquisition
    assert meta.project == "Sidecar project"
    assert meta.tags == ["28-Sep-2018", "Batgirl", "yaml-tag"]
    assert [v for k, v in meta.kvps if k == "Strain"] == ["Mig1-GFP", "Dot6-GFP"]
    assert ("Author", "Ivan Clark") in meta.kvps  # kept from the log
    assert [c.name for c in acq.channels] == ["Brightfield", "DIC", "GFP", "mCherry"]
    assert acq.channel("GFP").exposure_ms == 50 and acq.channel("GFP").excitation_nm == 470
    assert acq.z_spacing_um == 0.5 and acq.n_timepoints == 288
    assert acq.positions["pos001"].x_um == 1.5 and acq.positions["pos002"].x_um == 10846.5
    assert {"Points", "Doses", "Media"} <= set(meta.tables)


def test_sidecar_merges_over_lab_files_synthetic(synthetic_lab_files, caplog):
    meta = merge_sidecar(synthetic_lab_files, caplog)
    acq = meta.acquisition
    assert meta.project == "Sidecar project"
    assert meta.tags == [*dd.TAGS, "yaml-tag", "Batgirl"]
    assert [v for k, v in meta.kvps if k == "Strain"] == ["Mig1-GFP", "Dot6-GFP"]
    assert ("Author", dd.AUTHORS[-1]) in meta.kvps  # kept from the log
    assert [c.name for c in acq.channels] == [c.name for c in dd.CHANNELS] + ["mCherry"]
    assert acq.channel("GFP").exposure_ms == 50
    assert acq.channel("GFP").excitation_nm == SYNTHETIC_GFP.excitation_nm
    assert acq.z_spacing_um == 0.5 and acq.n_timepoints == N_TIMEPOINTS
    assert acq.positions["pos001"].x_um == 1.5
    assert acq.positions["pos002"].x_um == dd.stage_position(1)[0]
    assert {"Points", "Doses", "Media"} <= set(meta.tables)


@pytest.mark.parametrize("bad, needle", [
    ("colour: red", "unknown key(s) colour"),
    ("acquisition: {z_spacing_um: thin}", "acquisition.z_spacing_um: expected a float"),
    ("tags: [a\n", "not valid YML"),
    ("acquisition: {channels: [{exposure_ms: 3}]}", "name is required"),
])
def test_bad_sidecar(tmp_path, bad, needle):
    (tmp_path / "experiment.yml").write_text(bad)
    with pytest.raises(InputError) as err:
        load_metadata(tmp_path)
    assert "experiment.yml" in str(err.value) and needle in str(err.value)


# --- plug-ins ---------------------------------------------------------------------

CUSTOM = """
import pandas as pd
from pyomero_upload.plugins import MetadataParser

class CustomMetadataParser(MetadataParser):
    def extract_metadata(self, path):
        return {
            "description": "from a plug-in",
            "tags": ["t1", "t1", "t2"],
            "kvps": [{"Strain": ["A", "B"]}, ("Site", "Lab 3")],
            "tables": {"Counts": pd.DataFrame({"n": [1, 2]})},
        }
"""


def test_custom_parser_from_module_path(tmp_path, demo):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "custom_metadata_parser.py").write_text(CUSTOM)
    meta = load_metadata(demo, module_path=plug)
    assert meta.description == "from a plug-in" and meta.tags == ["t1", "t2"]
    assert meta.kvps == [("Strain", "A"), ("Strain", "B"), ("Site", "Lab 3")]
    assert meta.tables["Counts"]["n"].tolist() == [1, 2]


def test_custom_parser_from_entry_point(tmp_path, monkeypatch, demo, capsys):
    (tmp_path / "lab_plugin.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("lab", "lab_plugin:CustomMetadataParser", registry.PARSER_GROUP)
    installed = registry._entry_points
    monkeypatch.setattr(registry, "_entry_points", lambda group: (
        (*installed(group), ep) if group == registry.PARSER_GROUP else installed(group)))
    assert load_metadata(demo, parser="lab").description == "from a plug-in"
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    parsers, processors = out.split("Image processors")
    assert re.search(r"lab +entry point lab_plugin:CustomMetadataParser", parsers)
    # The built-ins, declared in pyproject.toml, of both kinds.
    assert re.search(r"auto +built in +\[default\]", parsers)
    assert re.search(r"acqlog +built in", parsers) and re.search(r"sidecar +built in", parsers)
    assert re.search(r"default +built in +\[default\]", processors)
    assert "CustomImageProcessor from DIR/custom_image_processor.py" in processors


@pytest.mark.parametrize("source, needle", [
    ("def broken(:\n", "error while loading plug-in: SyntaxError"),
    ("class Other:\n    pass\n", "defines no class CustomMetadataParser"),
    ("class CustomMetadataParser:\n    pass\n", "has no extract_metadata"),
    ("class CustomMetadataParser:\n    def extract_metadata(self, p):\n        return 42\n",
     "returned int"),
    ("class CustomMetadataParser:\n    def extract_metadata(self, p):\n"
     "        return {'tags': 'one'}\n", "tags must be a list of strings"),
    ("class CustomMetadataParser:\n    def extract_metadata(self, p):\n"
     "        return {'kvps': [1]}\n", "neither a (key, value) pair"),
    ("class CustomMetadataParser:\n    def extract_metadata(self, p):\n"
     "        raise KeyError('Aim')\n", "metadata parser failed"),
])
def test_broken_plugins(tmp_path, demo, capsys, source, needle):
    (tmp_path / "custom_metadata_parser.py").write_text(source)
    code = main(["metadata", str(demo), "-m", str(tmp_path), "-p"])
    err = capsys.readouterr().err
    assert code == 1 and needle in err and "Traceback" not in err, err


def test_unknown_parser_name(demo, capsys):
    assert main(["metadata", str(demo), "--parser", "nope"]) == 1
    assert "no metadata parser named 'nope'" in capsys.readouterr().err


@pytest.mark.real_data
def test_metadata_command_json(real_demo, capsys):
    assert main(["metadata", str(real_demo), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["project"] == "Morphology detection"
    assert data["acquisition"]["channels"][2]["emission_nm"] == 535
    assert data["tables"]["Points"]["rows"] == 25


def test_metadata_command_json_synthetic(synthetic, capsys):
    assert main(["metadata", str(synthetic), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["project"] == dd.PROJECT
    assert data["acquisition"]["channels"][2]["emission_nm"] == SYNTHETIC_GFP.emission_nm
    assert data["tables"]["Points"]["rows"] == N_POSITIONS
    assert data["tags"] == list(dd.TAGS)


# --- into the OME-TIFF ---------------------------------------------------------------


def export_to(experiment, out):
    assert main(["-q", "export", str(experiment), "-o", str(out), "--dataset", "d"]) == 0
    return out / "d"


@pytest.fixture(scope="module")
def exported(real_demo, tmp_path_factory):
    return export_to(real_demo, tmp_path_factory.mktemp("meta-out"))


@pytest.fixture(scope="module")
def exported_synthetic(synthetic, tmp_path_factory):
    return export_to(synthetic, tmp_path_factory.mktemp("meta-out-synthetic"))


def ome_of(path):
    with tifffile.TiffFile(path) as tif:
        return from_xml(tif.ome_metadata, validate=True)


@pytest.mark.real_data
def test_ome_physical_metadata(exported):
    ome = ome_of(exported / "pos002.ome.tiff")
    image = ome.images[0]
    px = image.pixels
    assert px.physical_size_z == pytest.approx(0.6) and px.physical_size_z_unit.value == "µm"
    assert px.time_increment == 300 and px.time_increment_unit.value == "s"
    assert image.acquisition_date == datetime(2018, 9, 28, 17, 18, 14)
    assert image.description.startswith("Aim: Compare morphology markers")
    assert ome.instruments[0].microscope.model == "Microscope1"
    assert image.instrument_ref.id == ome.instruments[0].id
    bf, dic, gfp = px.channels
    assert [c.name for c in px.channels] == ["Brightfield", "DIC", "GFP"]
    assert gfp.color.as_rgb_tuple()[:3] == (0, 255, 0)
    assert bf.color.as_rgb_tuple()[:3] == (255, 255, 255)
    assert (gfp.excitation_wavelength, gfp.emission_wavelength) == (470, 535)
    plane = next(p for p in px.planes if (p.the_t, p.the_c, p.the_z) == (1, 2, 3))
    assert plane.exposure_time == 7 and plane.exposure_time_unit.value == "ms"
    assert (plane.position_x, plane.position_y, plane.position_z) == (10846.5, 9805.6, 3430.875)
    # pos002's GFP at the first timepoint was set at 17:18:33, 19 s after the start
    first = next(p for p in px.planes if (p.the_t, p.the_c) == (0, 2))
    assert first.delta_t == 19.0 and first.delta_t_unit.value == "s"


def test_ome_physical_metadata_synthetic(exported_synthetic):
    ome = ome_of(exported_synthetic / "pos002.ome.tiff")
    image = ome.images[0]
    px = image.pixels
    assert px.physical_size_z == pytest.approx(dd.Z_SPACING_UM)
    assert px.physical_size_z_unit.value == "µm"
    assert px.time_increment == dd.INTERVAL_S and px.time_increment_unit.value == "s"
    assert image.acquisition_date == dd.START
    assert image.description.startswith(f"Aim: {dd.AIM}")
    assert ome.instruments[0].microscope.model == dd.MICROSCOPE
    assert image.instrument_ref.id == ome.instruments[0].id
    bf, dic, gfp = px.channels
    assert [c.name for c in px.channels] == [c.name for c in dd.CHANNELS]
    assert gfp.color.as_rgb_tuple()[:3] == (0, 255, 0)
    assert bf.color.as_rgb_tuple()[:3] == (255, 255, 255)
    assert (gfp.excitation_wavelength, gfp.emission_wavelength) == (
        SYNTHETIC_GFP.excitation_nm, SYNTHETIC_GFP.emission_nm)
    # every plane: pos002's exposure and stage position, and the log's time for its channel
    x, y, z, _group, exposures = dd.stage_position(1)
    assert len(px.planes) == N_TIMEPOINTS * len(dd.CHANNELS) * SYNTHETIC["z_sections"]
    for plane in px.planes:
        channel = dd.CHANNELS[plane.the_c]
        assert plane.exposure_time == exposures[channel.name]
        assert plane.exposure_time_unit.value == "ms"
        assert (plane.position_x, plane.position_y, plane.position_z) == (x, y, z)
        assert plane.delta_t == dd.plane_offset_s(plane.the_t, 1, plane.the_c)
        assert plane.delta_t_unit.value == "s"


@pytest.mark.real_data
def test_ome_annotations(exported):
    ome = ome_of(exported / "pos001.ome.tiff")
    sa = ome.structured_annotations
    assert [t.value for t in sa.tag_annotations] == ["28-Sep-2018", "Batgirl"]
    kv = next(m for m in sa.map_annotations if m.namespace == CLIENT_MAP_NS)
    pairs = [(m.k, m.value) for m in kv.value.ms]
    assert ("Project", "Morphology detection") in pairs
    assert [v for k, v in pairs if k == "Strain"][-1] == "Msn2-GFP"
    assert sa.comment_annotations[0].value.startswith("Aim:")
    prov = next(m for m in sa.map_annotations if m.namespace == "pyomero-upload/provenance")
    prov_pairs = dict((m.k, m.value) for m in prov.value.ms)
    assert prov_pairs["Exported With"].startswith("pyomero-upload ")
    assert "Uploaded With" not in prov_pairs  # an export is not an upload
    assert "PyOmeroUpload" in prov_pairs["Citation"] and prov_pairs["Source folder"] == "demo"
    refs = {r.id for r in ome.images[0].annotation_refs}
    all_ids = {a.id for a in [*sa.tag_annotations, *sa.map_annotations, *sa.comment_annotations]}
    assert refs == all_ids


def test_ome_annotations_synthetic(exported_synthetic, synthetic):
    ome = ome_of(exported_synthetic / "pos001.ome.tiff")
    sa = ome.structured_annotations
    assert [t.value for t in sa.tag_annotations] == list(dd.TAGS)
    kv = next(m for m in sa.map_annotations if m.namespace == CLIENT_MAP_NS)
    pairs = [(m.k, m.value) for m in kv.value.ms]
    assert ("Project", dd.PROJECT) in pairs
    assert ("Micromanager config file", dd.CONFIG_FILE) in pairs
    assert [v for k, v in pairs if k == "Strain"] == list(dd.STRAINS)
    assert sa.comment_annotations[0].value.startswith(f"Aim: {dd.AIM}")
    prov = next(m for m in sa.map_annotations if m.namespace == "pyomero-upload/provenance")
    prov_pairs = dict((m.k, m.value) for m in prov.value.ms)
    assert prov_pairs["Exported With"].startswith("pyomero-upload ")
    assert "Uploaded With" not in prov_pairs  # an export is not an upload
    assert "PyOmeroUpload" in prov_pairs["Citation"]
    assert prov_pairs["Source folder"] == synthetic.name
    refs = {r.id for r in ome.images[0].annotation_refs}
    all_ids = {a.id for a in [*sa.tag_annotations, *sa.map_annotations, *sa.comment_annotations]}
    assert refs == all_ids


@pytest.mark.real_data
def test_metadata_folder(exported, real_demo):
    folder = exported / "metadata"
    names = sorted(p.name for p in folder.iterdir())
    assert "microscope1_Acq.txt" in names and "microscope1_log.txt" in names
    copied = (folder / "microscope1_log.txt").read_bytes()
    assert copied == (real_demo / "microscope1_log.txt").read_bytes()
    points = pd.read_hdf(folder / "Points.h5", key="table")
    assert points["X position"].iloc[0] == 10846.5 and len(points) == 25
    pumps = pd.read_csv(folder / "Pumps.csv")
    assert pumps["Contents"].tolist() == ["2% glucose in SC", "No media"]
    assert not [p for p in exported.iterdir() if p.name.startswith(".")]


def test_metadata_folder_synthetic(exported_synthetic, synthetic):
    folder = exported_synthetic / "metadata"
    names = sorted(p.name for p in folder.iterdir())
    assert "microscope1_Acq.txt" in names and "microscope1_log.txt" in names
    for name in ("microscope1_Acq.txt", "microscope1_log.txt"):
        assert (folder / name).read_bytes() == (synthetic / name).read_bytes()
    points = pd.read_hdf(folder / "Points.h5", key="table")
    assert points["X position"].tolist() == [dd.stage_position(i)[0] for i in range(N_POSITIONS)]
    pumps = pd.read_csv(folder / "Pumps.csv")
    assert pumps["Contents"].tolist() == [pump[-1] for pump in dd.PUMPS]
    assert not [p for p in exported_synthetic.iterdir() if p.name.startswith(".")]


def test_no_provenance_and_ignore_metadata(demo, tmp_path):
    assert main(["-q", "export", str(demo), "-o", str(tmp_path), "--no-provenance", "-x"]) == 0
    ome = ome_of(tmp_path / "demo" / "pos001.ome.tiff")
    namespaces = [m.namespace for m in ome.structured_annotations.map_annotations]
    assert namespaces == ["pyomero-upload/source"]
    assert ome.images[0].pixels.physical_size_z is None
    assert not (tmp_path / "demo" / "metadata").exists()


@pytest.mark.real_data
def test_plane_times_from_png_time_chunks_without_a_log(real_demo, build_layout, tmp_path):
    root = build_layout(["pos001", "pos002"], lab_files=False)
    assert main(["-q", "export", str(root), "-o", str(tmp_path / "o")]) == 0
    planes = ome_of(tmp_path / "o" / "exp" / "pos002.ome.tiff").images[0].pixels.planes
    dt = {(p.the_t, p.the_c, p.the_z): p.delta_t for p in planes}
    # tIME of the first z-plane of each stack, from pos001's first plane (16:18:16 UTC);
    # the layout reuses pos002's real planes for pos002
    assert dt[(0, 0, 0)] == 12.0  # pos002 Brightfield T1 at 16:18:28
    assert dt[(1, 2, 4)] == dt[(1, 2, 0)]  # one time per stack
    assert dt[(1, 0, 0)] - dt[(0, 0, 0)] == pytest.approx(300, abs=2)


def test_plane_times_from_png_time_chunks_without_a_log_synthetic(
    synthetic, build_layout, tmp_path
):
    root = build_layout(["pos001", "pos002"], lab_files=False, source=synthetic)
    assert main(["-q", "export", str(root), "-o", str(tmp_path / "o")]) == 0
    planes = ome_of(tmp_path / "o" / "exp" / "pos002.ome.tiff").images[0].pixels.planes
    assert len(planes) == N_TIMEPOINTS * len(dd.CHANNELS) * SYNTHETIC["z_sections"]
    # the tIME of each stack's first plane, counted from pos001's first plane
    for p in planes:
        expected = dd.plane_offset_s(p.the_t, 1, p.the_c) - dd.plane_offset_s(0, 0, 0)
        assert p.delta_t == expected, (p.the_t, p.the_c, p.the_z)


def test_table_layout_needs_no_pandas_and_matches_the_dataframes(demo):
    """The settings fingerprint sums up each table (columns, dtypes, rows): that
    must not import pandas (it is on every export's path before any decoding),
    and must read the same as from the DataFrames, or fingerprints would move."""
    import subprocess
    import sys

    from pyomero_upload.describe import fingerprint_settings

    script = (
        "import sys\n"
        "from pyomero_upload.describe import fingerprint_settings\n"
        "from pyomero_upload.metadata import load_metadata\n"
        f"print(fingerprint_settings(load_metadata({str(demo)!r}), 'none'))\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[-1] == "False"
    meta = load_metadata(demo)
    assert meta.tables
    frames = {name: meta.tables[name] for name in meta.tables}  # now DataFrames
    assert all(isinstance(df, pd.DataFrame) for df in frames.values())
    assert fingerprint_settings(meta, "none") == out[0]
    summary = meta.to_dict()["tables"]
    for name, df in frames.items():
        assert summary[name] == {"columns": list(df.columns),
                                 "dtypes": [str(t) for t in df.dtypes], "rows": len(df)}
