"""The Acq/log parser, sidecars, plug-ins, and metadata in the OME-TIFF output.

Tests of the values an experiment's files hold run on two data sets, through the
``data_set`` fixture: "real" (the real demo experiment, marked ``real_data`` so
that conftest.py deselects it where the real data is absent) and "synthetic" (the
experiment ``pyomero_upload.demo_data`` writes with ``helpers.SYNTHETIC``: the same
shape and names, other values).  What each holds is in ``EXPECTED``, so a check is
written once; the few checks that only one data set can have say so where they are.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tracemalloc
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import EntryPoint
from pathlib import Path

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

#: x, y, z (µm), group and exposure ms by channel of a position in the Points table.
Stage = tuple[float, float, float, str, dict[str, float]]


@dataclass(frozen=True)
class Expected:
    """What one data set's Acq and log files and planes hold."""

    channels: list[tuple[str, float]]  # the Channels table: (name, exposure ms)
    optics: dict[str, tuple[float | None, float | None]]  # (excitation, emission) nm
    z_sections: int
    z_spacing_um: float
    time_settings: tuple[int, int, int]  # interval s, timepoints, duration s
    positions: list[str]  # the Points table's positions, in order
    stage: dict[str, Stage]  # the Points table's first rows (every row if all are known)
    pump_contents: list[str]
    pump_directions: list[str]
    flow_post_switch: list[float]
    tags: list[str]
    project: str
    strains: list[str]
    authors: list[str]
    config_file: str
    started: datetime
    microscope: str
    aim: str
    comments: tuple[str, str]  # the log's Comments: the part test_latin1_bytes replaces, the rest
    #: s from the start to when the log says a channel was set, by position and (T, channel);
    #: every one for the synthetic data, some for the real
    plane_offsets: dict[str, dict[tuple[int, str], float]]
    sidecar_tags: list[str]  # the tags after merging SIDECAR's [yaml-tag, Batgirl]
    stack: tuple[int, int, int]  # T, C, Z planes in each position folder
    #: pos002's delta_t by 0-based (T, C, Z) from the planes' tIME chunks alone (no log),
    #: counted from pos001's first plane; every plane for the synthetic data, one for the real
    png_delta_t: dict[tuple[int, int, int], float]


def _synthetic_stage(index: int) -> Stage:
    x, y, z, group, exposures = dd.stage_position(index)
    return x, y, z, str(group), exposures


_REAL_EXPOSURES = {"Brightfield": 30, "DIC": 30, "GFP": 7}
_SYNTHETIC_NAMES = [f"pos{i + 1:03d}" for i in range(N_POSITIONS)]

EXPECTED = {
    "real": Expected(
        channels=[("Brightfield", 30.0), ("DIC", 30.0), ("GFP", 60.0)],
        optics={"Brightfield": (None, None), "DIC": (None, None), "GFP": (470, 535)},
        z_sections=5,
        z_spacing_um=0.60,
        time_settings=(300, 288, 86400),
        positions=[f"pos{i:03d}" for i in range(1, 26)],
        stage={"pos001": (10846.50, 10208.10, 3431.425, "1", _REAL_EXPOSURES),
               "pos002": (10846.50, 9805.60, 3430.875, "1", _REAL_EXPOSURES)},
        pump_contents=["2% glucose in SC", "No media"],
        pump_directions=["INF", "INF"],
        flow_post_switch=[0.4, 4.0],
        tags=["28-Sep-2018", "Batgirl"],
        project="Morphology detection",
        strains=["Mig1-GFP", "Dot6-GFP", "Maf1-GFP", "Sfp1-GFP", "Msn2-GFP"],
        authors=["Julian Pietsch", "Ivan Clark"],
        config_file=r"C:\Users\Public\Microscope control\Micromanager config files"
                    r"\Batgirl5_9_18noemissionfilter.txt",
        started=datetime(2018, 9, 28, 17, 18, 14),
        microscope="Microscope1",
        aim="Compare morphology markers across microscopes",
        comments=("Low OD O/N.", "Log growth from OD0.1 for four hours."),
        plane_offsets={
            "pos001": {(1, "Brightfield"): 1.0,  # 17:18:15
                       (1, "GFP"): 8.0},  # 17:18:22
            "pos002": {(1, "Brightfield"): 12.0,  # 17:18:26
                       (1, "GFP"): 19.0},  # 17:18:33
        },
        sidecar_tags=["28-Sep-2018", "Batgirl", "yaml-tag"],
        stack=(3, 3, 5),
        # pos002's Brightfield T1 at 16:18:28 UTC, pos001's first plane at 16:18:16
        png_delta_t={(0, 0, 0): 12.0},
    ),
    "synthetic": Expected(
        channels=[(c.name, c.exposure_ms) for c in dd.CHANNELS],
        optics={c.name: (c.excitation_nm, c.emission_nm) for c in dd.CHANNELS},
        z_sections=SYNTHETIC["z_sections"],
        z_spacing_um=dd.Z_SPACING_UM,
        time_settings=(dd.INTERVAL_S, N_TIMEPOINTS, dd.INTERVAL_S * N_TIMEPOINTS),
        positions=_SYNTHETIC_NAMES,
        stage={name: _synthetic_stage(i) for i, name in enumerate(_SYNTHETIC_NAMES)},
        pump_contents=[pump[-1] for pump in dd.PUMPS],
        pump_directions=[pump[3] for pump in dd.PUMPS],
        flow_post_switch=list(dd.FLOW_POST_SWITCH),
        tags=list(dd.TAGS),
        project=dd.PROJECT,
        strains=list(dd.STRAINS),
        authors=list(dd.AUTHORS),
        config_file=dd.CONFIG_FILE,
        started=dd.START,
        microscope=dd.MICROSCOPE,
        aim=dd.AIM,
        comments=tuple(dd.COMMENTS.split(" ", 1)),
        plane_offsets={
            name: {(t + 1, c.name): float(dd.plane_offset_s(t, p, ci))
                   for t in range(N_TIMEPOINTS) for ci, c in enumerate(dd.CHANNELS)}
            for p, name in enumerate(_SYNTHETIC_NAMES)
        },
        sidecar_tags=[*dd.TAGS, "yaml-tag", "Batgirl"],
        stack=(N_TIMEPOINTS, len(dd.CHANNELS), SYNTHETIC["z_sections"]),
        png_delta_t={
            (t, ci, z): dd.plane_offset_s(t, 1, ci) - dd.plane_offset_s(0, 0, 0)
            for t in range(N_TIMEPOINTS) for ci in range(len(dd.CHANNELS))
            for z in range(SYNTHETIC["z_sections"])
        },
    ),
}


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.real_data), "synthetic"])
def data_set(request) -> str:
    """ "real" or "synthetic": a test that uses it runs once on each data set.

    Function-scoped so that pytest keeps the tests in file order: with a wider scope it
    would group them by data set and run CLI tests (whose ``main`` stops the package's
    logger from propagating, for the rest of the run) before the caplog tests.
    """
    return request.param


@pytest.fixture
def experiment(data_set, request) -> Path:
    """The experiment folder of ``data_set``."""
    return request.getfixturevalue("real_demo" if data_set == "real" else "synthetic")


@pytest.fixture
def expected(data_set) -> Expected:
    return EXPECTED[data_set]


@pytest.fixture
def lab_files(demo, tmp_path):
    """A folder with copies of the demo's Acq and log files only."""
    return copy_lab_files(demo, tmp_path / "lab")


@pytest.fixture
def experiment_lab_files(experiment, tmp_path):
    """A folder with copies of ``experiment``'s Acq and log files only."""
    return copy_lab_files(experiment, tmp_path / "lab")


def parse(root) -> ExperimentMetadata:
    return AcqLogParser().extract_metadata(root)


def channel_names(expected: Expected) -> list[str]:
    return [name for name, _ in expected.channels]


def test_values(experiment, expected, data_set):
    """Every value of the lab files is read back."""
    meta = parse(experiment)
    acq = meta.acquisition
    assert [(c.name, c.exposure_ms) for c in acq.channels] == expected.channels
    assert meta.tables["Z_sectioning"]["Sections"].iloc[0] == expected.z_sections
    assert acq.z_spacing_um == pytest.approx(expected.z_spacing_um)
    assert (acq.time_interval_s, acq.n_timepoints, acq.duration_s) == expected.time_settings
    assert len(acq.positions) == len(expected.positions)
    assert list(acq.positions) == expected.positions
    for name, (x, y, z, group, exposures) in expected.stage.items():
        p = acq.positions[name]
        assert (p.x_um, p.y_um, p.z_um) == (x, y, z), name
        assert p.group == group and p.exposures_ms == exposures, name
    # the Points table's GFP exposure, not the Channels table's
    assert acq.positions["pos001"].exposures_ms["GFP"] != dict(expected.channels)["GFP"]
    pumps = meta.tables["Pumps"]
    assert list(pumps["Contents"]) == expected.pump_contents
    assert ("Pumps", str(len(expected.pump_contents))) in meta.kvps
    assert meta.tags == expected.tags
    assert meta.project == expected.project
    assert [v for k, v in meta.kvps if k == "Strain"] == expected.strains
    assert [v for k, v in meta.kvps if k == "Author"] == expected.authors
    assert ("Micromanager config file", expected.config_file) in meta.kvps  # colons and all
    assert ("Comments", " ".join(expected.comments)) in meta.kvps
    assert acq.started == expected.started
    assert acq.microscope == expected.microscope
    for name, optics in expected.optics.items():
        info = acq.channel(name)
        assert (info.excitation_nm, info.emission_nm) == optics, name
    if data_set == "synthetic":
        # demo_data's GFP optics (read back above) are the real ones, in plain numbers
        assert (SYNTHETIC_GFP.excitation_nm, SYNTHETIC_GFP.emission_nm) == (470, 535)
    assert f"Aim: {expected.aim}" in meta.description
    assert f"Strains: {', '.join(expected.strains)}" in meta.description
    assert [f.name for f in meta.attachments] == ["microscope1_Acq.txt", "microscope1_log.txt"]


def test_clean_values_no_duplicates(demo):
    meta = parse(demo)
    for k, v in meta.kvps:
        assert not re.search(r"^\[.*\]$|\['|'\]", v), (k, v)
        assert v.strip() == v and v
    assert len(meta.kvps) == len(set(meta.kvps))
    assert ("Channel GFP light path", "470nm LED") in meta.kvps


def test_typed_tables(experiment, expected):
    t = parse(experiment).tables
    assert t["Channels"]["Channel name"].tolist() == channel_names(expected)
    assert str(t["Channels"]["Exposure time"].dtype) == "int64"
    assert str(t["Channels"]["Voltage"].dtype) == "float64"
    assert str(t["Points"]["X position"].dtype) == "float64"
    assert str(t["Points"]["Group"].dtype) == "int64"
    assert t["Pumps"]["Direction"].tolist() == expected.pump_directions
    assert t["Pumps"]["Direction"].tolist() == ["INF", "INF"]  # text, not infinity
    assert t["Time_settings"].iloc[0].tolist() == [1, *expected.time_settings]
    sw = t["Switching_parameters"]
    assert sw[sw.Parameter == "Flow post switch"]["Value"].tolist() == expected.flow_post_switch


def test_parsing_twice_is_equal(demo):
    a, b = parse(demo), parse(demo)
    assert a.to_dict() == b.to_dict()
    assert a.kvps == b.kvps
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])


def test_plane_times_from_the_machine_log(experiment, expected, data_set):
    offsets = parse(experiment).acquisition.plane_offsets_s
    for position, times in expected.plane_offsets.items():
        for key, seconds in times.items():
            assert offsets[position][key] == seconds, (position, key)
    if data_set == "synthetic":
        # demo_data's table lists every plane time of its log; the real log's 225 (25
        # positions x 3 T x 3 C) are only sampled
        assert offsets == expected.plane_offsets


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


@pytest.mark.parametrize("field", LOG_FIELDS)
def test_log_without_each_field(experiment_lab_files, expected, caplog, field):
    meta = drop_log_field(experiment_lab_files, caplog, field)
    assert len(meta.acquisition.positions) == len(expected.positions)  # the rest still parsed


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


@pytest.mark.parametrize("section", ACQ_SECTIONS)
def test_acq_without_each_section(experiment_lab_files, expected, caplog, section):
    meta = drop_acq_section(experiment_lab_files, caplog, section)
    assert meta.tags == expected.tags  # the log still parsed
    # one entry per position the log names: the Points table's positions
    assert len(meta.acquisition.plane_offsets_s) == len(expected.positions)


@pytest.mark.parametrize("newline", ["\n", "\r", "\r\n"])
def test_line_endings(demo, lab_files, newline):
    for f in lab_files.glob("*.txt"):
        text = f.read_bytes().decode().replace("\r\n", "\n").replace("\r", "\n")
        f.write_bytes(text.replace("\n", newline).encode())
    assert parse(lab_files).to_dict() == {
        **parse(demo).to_dict(),
        "attachments": [str(p) for p in sorted(lab_files.glob("*.txt"))],
    }


def test_latin1_bytes(experiment_lab_files, expected, caplog):
    log = experiment_lab_files / "microscope1_log.txt"
    replaced, rest = expected.comments
    data = log.read_bytes().replace(replaced.encode(), b"Spacing 5 \xb5m.")
    log.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        meta = parse(experiment_lab_files)
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


def test_sidecar_merges_over_lab_files(experiment_lab_files, expected, caplog):
    meta = merge_sidecar(experiment_lab_files, caplog)
    acq = meta.acquisition
    assert meta.project == "Sidecar project"
    assert meta.tags == expected.sidecar_tags
    assert [v for k, v in meta.kvps if k == "Strain"] == ["Mig1-GFP", "Dot6-GFP"]
    assert ("Author", expected.authors[-1]) in meta.kvps  # kept from the log
    assert [c.name for c in acq.channels] == [*channel_names(expected), "mCherry"]
    assert acq.channel("GFP").exposure_ms == 50
    assert acq.channel("GFP").excitation_nm == expected.optics["GFP"][0]
    assert acq.z_spacing_um == 0.5 and acq.n_timepoints == expected.time_settings[1]
    assert acq.positions["pos001"].x_um == 1.5
    assert acq.positions["pos002"].x_um == expected.stage["pos002"][0]
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


def test_metadata_command_json(experiment, expected, capsys):
    assert main(["metadata", str(experiment), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["project"] == expected.project
    assert data["acquisition"]["channels"][2]["emission_nm"] == expected.optics["GFP"][1]
    assert data["tables"]["Points"]["rows"] == len(expected.positions)
    assert data["tags"] == expected.tags


# --- into the OME-TIFF ---------------------------------------------------------------


def export_to(experiment, out):
    assert main(["-q", "export", str(experiment), "-o", str(out), "--dataset", "d"]) == 0
    return out / "d"


@pytest.fixture(scope="module")
def exports() -> dict[str, Path]:
    """The exports ``exported`` made, by data set."""
    return {}


@pytest.fixture
def exported(experiment, data_set, exports, tmp_path_factory) -> Path:
    """``experiment`` exported as OME-TIFF (dataset "d"), once per data set."""
    if data_set not in exports:
        out = tmp_path_factory.mktemp(f"meta-out-{data_set}")
        exports[data_set] = export_to(experiment, out)
    return exports[data_set]


def ome_of(path):
    with tifffile.TiffFile(path) as tif:
        return from_xml(tif.ome_metadata, validate=True)


def test_ome_physical_metadata(exported, expected):
    ome = ome_of(exported / "pos002.ome.tiff")
    image = ome.images[0]
    pixels = image.pixels
    assert pixels.physical_size_z == pytest.approx(expected.z_spacing_um)
    assert pixels.physical_size_z_unit.value == "µm"
    assert pixels.time_increment == expected.time_settings[0]
    assert pixels.time_increment_unit.value == "s"
    assert image.acquisition_date == expected.started
    assert image.description.startswith(f"Aim: {expected.aim}")
    assert ome.instruments[0].microscope.model == expected.microscope
    assert image.instrument_ref.id == ome.instruments[0].id
    bf, dic, gfp = pixels.channels
    names = channel_names(expected)
    assert [c.name for c in pixels.channels] == names
    assert gfp.color.as_rgb_tuple()[:3] == (0, 255, 0)
    assert bf.color.as_rgb_tuple()[:3] == (255, 255, 255)
    assert (gfp.excitation_wavelength, gfp.emission_wavelength) == expected.optics["GFP"]
    # every plane: pos002's exposure and stage position
    x, y, z, _group, exposures = expected.stage["pos002"]
    assert len(pixels.planes) == math.prod(expected.stack)
    for plane in pixels.planes:
        assert plane.exposure_time == exposures[names[plane.the_c]]
        assert plane.exposure_time_unit.value == "ms"
        assert (plane.position_x, plane.position_y, plane.position_z) == (x, y, z)
        assert plane.delta_t_unit.value == "s"
    # every plane of a stack has the log's time for its channel (for the synthetic
    # data the table has every stack, so every plane is checked)
    for (t, channel), seconds in expected.plane_offsets["pos002"].items():
        stack = [p for p in pixels.planes if (p.the_t + 1, names[p.the_c]) == (t, channel)]
        assert len(stack) == expected.stack[2], (t, channel)
        assert [p.delta_t for p in stack] == [seconds] * len(stack), (t, channel)


def test_ome_annotations(exported, experiment, expected):
    ome = ome_of(exported / "pos001.ome.tiff")
    sa = ome.structured_annotations
    assert [t.value for t in sa.tag_annotations] == expected.tags
    kv = next(m for m in sa.map_annotations if m.namespace == CLIENT_MAP_NS)
    pairs = [(m.k, m.value) for m in kv.value.ms]
    assert ("Project", expected.project) in pairs
    assert ("Micromanager config file", expected.config_file) in pairs
    assert [v for k, v in pairs if k == "Strain"] == expected.strains
    assert sa.comment_annotations[0].value.startswith(f"Aim: {expected.aim}")
    prov = next(m for m in sa.map_annotations if m.namespace == "pyomero-upload/provenance")
    prov_pairs = dict((m.k, m.value) for m in prov.value.ms)
    assert prov_pairs["Exported With"].startswith("pyomero-upload ")
    assert "Uploaded With" not in prov_pairs  # an export is not an upload
    assert "PyOmeroUpload" in prov_pairs["Citation"]
    assert prov_pairs["Source folder"] == experiment.name == "demo"  # both folders are "demo"
    refs = {r.id for r in ome.images[0].annotation_refs}
    all_ids = {a.id for a in [*sa.tag_annotations, *sa.map_annotations, *sa.comment_annotations]}
    assert refs == all_ids


def test_metadata_folder(exported, experiment, expected):
    folder = exported / "metadata"
    names = sorted(p.name for p in folder.iterdir())
    assert "microscope1_Acq.txt" in names and "microscope1_log.txt" in names
    for name in ("microscope1_Acq.txt", "microscope1_log.txt"):
        assert (folder / name).read_bytes() == (experiment / name).read_bytes()
    points = pd.read_hdf(folder / "Points.h5", key="table")
    # the X positions of the table's first rows (every row for the synthetic data)
    xs = [expected.stage[name][0] for name in expected.positions[:len(expected.stage)]]
    assert points["X position"].tolist()[:len(xs)] == xs
    assert len(points) == len(expected.positions)
    pumps = pd.read_csv(folder / "Pumps.csv")
    assert pumps["Contents"].tolist() == expected.pump_contents
    assert not [p for p in exported.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_metadata_folder_starts_with_the_last_position_where_the_writer_allows(
        demo, tmp_path, monkeypatch, fmt):
    """In one process the folder starts as the last position starts (OME-TIFF) or
    after every position (OME-Zarr, whose shards are held in memory), never
    before: by then no error about the outputs can still come."""
    from pyomero_upload.export import folder as folder_mod

    out = tmp_path / "o"
    seen = []
    start = folder_mod.MetadataFolder.start.__func__

    def recording(cls, metadata, out_dir):
        seen.append(sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")))
        return start(cls, metadata, out_dir)

    monkeypatch.setattr(folder_mod.MetadataFolder, "start", classmethod(recording))
    assert main(["-q", "export", str(demo), "-o", str(out), "--format", fmt]) == 0
    suffix = ".ome.tiff" if fmt == "ome-tiff" else ".ome.zarr"
    done = [f"pos00{i}{suffix}" for i in (1, 2, 3)]
    assert seen == [done[:2] if fmt == "ome-tiff" else done]
    assert sorted(p.name for p in (out / "demo").iterdir()) == ["metadata", *done]


def test_no_provenance_and_ignore_metadata(demo, tmp_path):
    assert main(["-q", "export", str(demo), "-o", str(tmp_path), "--no-provenance", "-x"]) == 0
    ome = ome_of(tmp_path / "demo" / "pos001.ome.tiff")
    namespaces = [m.namespace for m in ome.structured_annotations.map_annotations]
    assert namespaces == ["pyomero-upload/source"]
    assert ome.images[0].pixels.physical_size_z is None
    assert not (tmp_path / "demo" / "metadata").exists()


def test_plane_times_from_png_time_chunks_without_a_log(
    experiment, expected, build_layout, tmp_path
):
    # the layout reuses pos002's planes for pos002
    root = build_layout(["pos001", "pos002"], lab_files=False, source=experiment)
    assert main(["-q", "export", str(root), "-o", str(tmp_path / "o")]) == 0
    planes = ome_of(tmp_path / "o" / "exp" / "pos002.ome.tiff").images[0].pixels.planes
    assert len(planes) == math.prod(expected.stack)
    dt = {(p.the_t, p.the_c, p.the_z): p.delta_t for p in planes}
    # the tIME of each stack's first plane, counted from pos001's first plane (for the
    # synthetic data the table has every plane)
    for key, seconds in expected.png_delta_t.items():
        assert dt[key] == seconds, key
    last_z = expected.stack[2] - 1
    assert dt[(1, 2, last_z)] == dt[(1, 2, 0)]  # one time per stack
    assert dt[(1, 0, 0)] - dt[(0, 0, 0)] == pytest.approx(expected.time_settings[0], abs=2)


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
