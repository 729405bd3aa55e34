"""The default metadata parser: the lab's ``*Acq.txt`` and ``*log.txt`` files.

No module-level state: every call builds its result from scratch, so
parsing twice gives equal results.  Any missing or unrecognised section or
field is a warning naming it, never an exception; only unreadable files
raise (as :class:`InputError`).
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from ..errors import InputError
from ..model import ChannelInfo, ExperimentMetadata, StagePosition, Table
from .base import MetadataParser

log = logging.getLogger(__name__)

ACQ_SECTIONS = ("Channels", "Z_sectioning", "Time_settings", "Points", "Flow_control")
LOG_FIELDS = (
    "Aim",
    "Strain",
    "Authors",
    "Comments",
    "Microscope setup for used channels",
    "Micromanager config file",
    "Omero project",
    "Omero tags",
    "Experiment started at",
)
TIME_SETTINGS_COLUMNS = ["Is timelapse", "Interval (s)", "Timepoints", "Total duration (s)"]
SWITCHING_PARAMETERS = (
    "Infuse/withdraw volumes",
    "Infuse/withdraw rates",
    "Times",
    "Switched to",
    "Switched from",
    "Flow post switch",
)
_STAMP_FORMATS = ("%d-%b-%Y %H:%M:%S", "%d-%b-%Y %H:%M", "%Y-%m-%d %H:%M:%S", "%d-%b-%Y")
_STAMP_RE = re.compile(r"\d{1,2}-[A-Za-z]{3}-\d{4} \d{1,2}:\d{2}:\d{2}")
_FIELD_RE = re.compile(r"^({}):(.*)$".format("|".join(re.escape(f) for f in LOG_FIELDS)))
_TIMEPOINT_RE = re.compile(r"^-+\s*Time point_(\d+)\s*-+$")
_POSITION_RE = re.compile(r"^Position:(\d+),(.+)$")
_CHANNEL_SET_RE = re.compile(r"^Channel:(.+?) set at:(.+)$")
_COMPLETED_RE = re.compile(rb"^Timepoint:(\d+) completed", re.MULTILINE)
#: How much of a log's end :func:`last_completed_timepoint` reads at first.
_TAIL_BYTES = 64 * 1024


def find_files(root: Path) -> tuple[Path | None, Path | None]:
    """The experiment's ``*Acq.txt`` and ``*log.txt`` (first by name if several)."""

    def pick(suffix: str) -> Path | None:
        found = sorted(
            p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(suffix)
        )
        if len(found) > 1:
            log.warning("%s: several *%s files; using %s", root, suffix, found[0].name)
        return found[0] if found else None

    return pick("acq.txt"), pick("log.txt")


def parse_timestamp(text: str) -> datetime | None:
    text = text.strip()
    for fmt in _STAMP_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _number(text: str) -> int | float | str:
    text = text.strip()
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    return text


_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")


def _typed_table(header: list[str], rows: list[list[str]]) -> Table:
    """A table whose numeric columns are int64 or float64, the rest text.

    Only plain decimal numbers count ("INF", a pump direction, stays text).
    """
    width = len(header)
    rows = [(r + [""] * width)[:width] for r in rows]
    columns: dict[str, list] = {}
    dtypes: dict[str, str] = {}
    for j, name in enumerate(header):
        values = [r[j].strip() for r in rows]
        if values and all(_INT_RE.fullmatch(v) for v in values):
            columns[name], dtypes[name] = [int(v) for v in values], "int64"
        elif values and all(_FLOAT_RE.fullmatch(v) for v in values):
            columns[name], dtypes[name] = [float(v) for v in values], "float64"
        else:
            columns[name], dtypes[name] = values, "object"
    return Table(columns, dtypes)


def _split(line: str) -> list[str]:
    return [cell.strip() for cell in line.split(",")]


# --- text input -------------------------------------------------------------


def read_text(path: Path) -> str:
    """Whole file as text: UTF-8, else Latin-1 (with a warning); any line endings."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("%s: not UTF-8; read as Latin-1", path)
        text = data.decode("latin-1")
    return text


def iter_lines(path: Path) -> Iterator[str]:
    """Stream a (possibly large) file's lines, any line endings, UTF-8 else Latin-1."""
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            with open(path, encoding=encoding, newline=None) as fh:
                if encoding == "utf-8-sig":
                    # Decode errors surface while iterating: check the whole file first,
                    # in chunks, so a late bad byte does not leave half a parse.
                    while fh.read(1 << 20):
                        pass
                    fh.seek(0)
                else:
                    log.warning("%s: not UTF-8; read as Latin-1", path)
                for line in fh:
                    yield line.rstrip("\n")
            return
        except UnicodeDecodeError:
            continue
        except OSError as exc:
            raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None


# --- Acq file -----------------------------------------------------------------


def _acq_sections(lines: Iterable[str], path: Path) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw in lines:
        line = raw.strip()
        m = re.fullmatch(r"(\w+):", line)
        if m and (m.group(1) in ACQ_SECTIONS or current != "Flow_control"):
            current = m.group(1)
            if current not in ACQ_SECTIONS:
                log.warning("%s: unrecognised section %r ignored", path, current)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def _table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    rows = [_split(line) for line in lines if line]
    return (rows[0], rows[1:]) if rows else ([], [])


def _section_table(
    sections: dict[str, list[str]], name: str, meta: ExperimentMetadata, path: Path
) -> Table | None:
    """A header-and-rows section as a typed table, kept in ``meta.tables``;
    None if the section is absent or (with a warning) has no table."""
    if name not in sections:
        return None
    header, rows = _table(sections[name])
    if not (header and rows):
        log.warning("%s: section %s: no table", path, name)
        return None
    table = _typed_table(header, rows)
    meta.tables[name] = table
    return table


def parse_acq(path: Path, meta: ExperimentMetadata) -> None:
    """Fill ``meta`` from an acquisition file."""
    text = read_text(path)
    sections = _acq_sections(text.splitlines(), path)
    acq = meta.acquisition
    for name in ACQ_SECTIONS:
        if name not in sections:
            log.warning("%s: section %s: missing", path, name)

    table = _section_table(sections, "Channels", meta, path)
    if table is not None:
        for row in table.rows():
            name = next(iter(row.values()))
            acq.channels.append(ChannelInfo(str(name), _float(row.get("Exposure time"))))

    table = _section_table(sections, "Z_sectioning", meta, path)
    if table is not None:
        first = table.rows()[0]
        if _is_num(first.get("Spacing")):
            acq.z_spacing_um = float(first["Spacing"])
        if _is_num(first.get("Sections")):
            meta.kvps.append(("Z sections", str(first["Sections"])))

    if "Time_settings" in sections:
        values = [_split(line) for line in sections["Time_settings"] if line]
        if values and len(values[0]) >= 3:
            table = _typed_table(TIME_SETTINGS_COLUMNS[: len(values[0])], values[:1])
            meta.tables["Time_settings"] = table
            first = table.rows()[0]
            acq.time_interval_s = _float(first.get("Interval (s)"))
            timepoints = _float(first.get("Timepoints"))
            acq.n_timepoints = int(timepoints) if timepoints is not None else None
            acq.duration_s = _float(first.get("Total duration (s)"))
        else:
            log.warning("%s: section Time_settings: expected 'timelapse,interval,n,total'", path)

    table = _section_table(sections, "Points", meta, path)
    if table is not None:
        fixed = {"Position name", "X position", "Y position", "Z position", "PFS offset", "Group"}
        channel_cols = [c for c in table.columns if c not in fixed]
        for row in table.rows():
            name = str(next(iter(row.values())))
            acq.positions[name] = StagePosition(
                name,
                _float(row.get("X position")),
                _float(row.get("Y position")),
                _float(row.get("Z position")),
                str(row["Group"]) if "Group" in row else None,
                {c: float(row[c]) for c in channel_cols if _is_num(row[c])},
            )

    if "Flow_control" in sections:
        _parse_flow(sections["Flow_control"], meta, path)

    if acq.z_spacing_um is not None:
        meta.kvps.append(("Z spacing (µm)", _fmt(acq.z_spacing_um)))
    if acq.time_interval_s is not None:
        meta.kvps.append(("Time interval (s)", _fmt(acq.time_interval_s)))
    if acq.n_timepoints is not None:
        meta.kvps.append(("Timepoints", str(acq.n_timepoints)))
    if acq.duration_s is not None:
        meta.kvps.append(("Duration (s)", _fmt(acq.duration_s)))
    for ch in acq.channels:
        if ch.exposure_ms is not None:
            meta.kvps.append((f"Channel {ch.name} exposure (ms)", _fmt(ch.exposure_ms)))


def _parse_flow(lines: list[str], meta: ExperimentMetadata, path: Path) -> None:
    i, n = 0, len(lines)
    params: list[tuple[str, int, float | str]] = []
    while i < n:
        line = lines[i]
        m = re.match(r"Syringe pump details:\s*(\d+)\s*pumps?", line)
        if m:
            meta.kvps.append(("Pumps", m.group(1)))
        elif line.startswith("Pump port"):
            header = _split(line)
            rows = []
            while i + 1 < n and lines[i + 1] and "," in lines[i + 1]:
                i += 1
                rows.append(_split(lines[i]))
            if rows:
                pumps = _typed_table(header, rows)
                meta.tables["Pumps"] = pumps
                for row in pumps.rows():
                    if "Contents" in row:
                        port = next(iter(row.values()))
                        meta.kvps.append((f"Pump {port} contents", str(row["Contents"])))
        elif line.startswith("Number of pump changes:"):
            if i + 1 < n and lines[i + 1]:
                i += 1
                meta.kvps.append(("Pump changes", lines[i]))
        elif line.rstrip(":") in SWITCHING_PARAMETERS and line.endswith(":"):
            name = line.rstrip(":")
            k = 0
            while i + 1 < n and lines[i + 1] and not lines[i + 1].endswith(":"):
                i += 1
                for cell in _split(lines[i]):
                    params.append((name, k, _number(cell)))
                    k += 1
        i += 1
    if params:
        cells = [v for _, _, v in params]
        numeric = all(isinstance(v, int | float) for v in cells)
        meta.tables["Switching_parameters"] = Table(
            {"Parameter": [p for p, _, _ in params], "Index": [k for _, k, _ in params],
             "Value": [float(v) for v in cells] if numeric else cells},
            {"Parameter": "object", "Index": "int64", "Value": "float64" if numeric else "object"},
        )
        for name in dict.fromkeys(p for p, _, _ in params):
            joined = ", ".join(_fmt(v) for p, _, v in params if p == name)
            meta.kvps.append((f"Switching {name.lower()}", joined))
    elif not any(line.startswith("Switching parameters") for line in lines):
        log.warning("%s: section Flow_control: no switching parameters", path)


def _is_num(value) -> bool:
    """A real number (Python or numpy), not bool, not NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def _float(value) -> float | None:
    return float(value) if _is_num(value) else None


def _fmt(value) -> str:
    """Numbers as a person writes them: 300 not 300.0, 0.6 not 0.6000000001."""
    if _is_num(value):
        value = float(value)
        return str(int(value)) if value.is_integer() else f"{value:.10g}"
    return str(value)


# --- log file -----------------------------------------------------------------


def _clean_optics(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace('"', "").replace("[", "").replace("]", "")).strip(" ,")


def _parse_optics(lines: list[str], meta: ExperimentMetadata) -> None:
    """Per-channel blocks: a ``Name:`` line, light path lines, ``->Label:[...]`` lines."""
    channel: str | None = None
    light: list[str] = []
    parts: list[tuple[str, str]] = []

    def flush() -> None:
        if channel is None:
            return
        path_text = _clean_optics(" ".join(light))
        if path_text:
            meta.kvps.append((f"Channel {channel} light path", path_text))
        for label, value in parts:
            if value:
                meta.kvps.append((f"Channel {channel} {label.lower()}", value))
        info = meta.acquisition.channel(channel)
        if info is None:
            info = ChannelInfo(channel)
            meta.acquisition.channels.append(info)
        m = re.search(r"(\d{3})\s*nm", path_text)
        if m:  # a coloured light source: fluorescence; the emission filter says where
            info.excitation_nm = float(m.group(1))
            for _label, value in parts:
                em = re.search(r"(\d{3})/\d+\s*(?:nm\s*)?emission", value)
                if em:
                    info.emission_nm = float(em.group(1))

    for line in lines:
        label = re.match(r"^->\s*([^:\[(]+):\s*(.*)$", line)
        if re.fullmatch(r"[\w .+-]+:", line) and not line.startswith("->"):
            flush()
            channel, light, parts = line[:-1].strip(), [], []
        elif label and channel is not None:
            parts.append((label.group(1).strip(), _clean_optics(label.group(2))))
        elif channel is not None:
            light.append(line.replace("->", " -> "))
    flush()


def parse_log(path: Path, meta: ExperimentMetadata) -> None:
    """Fill ``meta`` from a log file: the human header, then per-plane times."""
    lines = iter_lines(path)
    fields: dict[str, list[str]] = {}
    current: str | None = None
    in_details = False
    timepoint: int | None = None
    for raw in lines:
        line = raw.strip()
        m = _TIMEPOINT_RE.match(line)
        if m:
            timepoint = int(m.group(1))
            break
        if line.startswith("Microscope name is:"):
            meta.acquisition.microscope = line.split(":", 1)[1].strip() or None
            continue
        if line.startswith("Experiment details:"):
            in_details = True
            continue
        if not in_details:
            continue
        fm = _FIELD_RE.match(line)
        if fm:
            current = fm.group(1)
            fields[current] = [fm.group(2).strip()] if fm.group(2).strip() else []
        elif current is not None and line:
            fields[current].append(line)

    if not in_details:
        log.warning("%s: no 'Experiment details:' header", path)
    for name in LOG_FIELDS:
        if in_details and name not in fields:
            log.warning("%s: field %s: missing", path, name)
    _apply_log_fields(fields, meta, path)
    if timepoint is not None:
        _parse_machine_log(lines, timepoint, meta)


def _apply_log_fields(fields: dict[str, list[str]], meta: ExperimentMetadata, path: Path) -> None:
    acq = meta.acquisition
    aim = " ".join(fields.get("Aim", []))
    strains = fields.get("Strain", [])
    authors = fields.get("Authors", [])
    comments = " ".join(fields.get("Comments", []))
    if aim:
        meta.kvps.append(("Aim", aim))
    meta.kvps += [("Strain", s) for s in strains]
    meta.kvps += [("Author", a) for a in authors]
    if comments:
        meta.kvps.append(("Comments", comments))
    parts = []
    if aim:
        parts.append(f"Aim: {aim}")
    if authors:
        parts.append(f"Authors: {', '.join(authors)}")
    if strains:
        parts.append(f"Strains: {', '.join(strains)}")
    if comments:
        parts.append(f"Comments: {comments}")
    meta.description = "\n".join(parts)

    project = fields.get("Omero project", [])
    if project:
        meta.project = project[0]
        meta.kvps.append(("Project", project[0]))
    tags = fields.get("Omero tags", [])
    if tags:
        # Tags are one comma-separated line; later lines are machine messages.
        meta.tags = list(dict.fromkeys(t.strip() for t in tags[0].split(",") if t.strip()))
    config = fields.get("Micromanager config file", [])
    if config:
        meta.kvps.append(("Micromanager config file", config[0]))
    started = fields.get("Experiment started at", [])
    if started:
        acq.started = parse_timestamp(started[0])
        if acq.started is None:
            log.warning("%s: field Experiment started at: cannot read %r", path, started[0])
        else:
            meta.kvps.append(("Experiment start", acq.started.isoformat(sep=" ")))
    if acq.microscope:
        meta.kvps.append(("Microscope", acq.microscope))
    _parse_optics(fields.get("Microscope setup for used channels", []), meta)


def _parse_machine_log(lines: Iterator[str], timepoint: int, meta: ExperimentMetadata) -> None:
    """Per (position, timepoint, channel): seconds from the start to 'Channel:X set at'."""
    start = meta.acquisition.started
    if start is None:
        return
    offsets = meta.acquisition.plane_offsets_s
    position: str | None = None
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("-"):
            m = _TIMEPOINT_RE.match(line)
            if m:
                timepoint, position = int(m.group(1)), None
        elif line.startswith("Position:"):
            m = _POSITION_RE.match(line)
            if m:
                position = m.group(2).strip()
        elif line.startswith("Channel:") and position is not None:
            m = _CHANNEL_SET_RE.match(line)
            if m:
                when = parse_timestamp(m.group(2))
                if when is not None:
                    key = (timepoint, m.group(1).strip())
                    offsets.setdefault(position, {}).setdefault(
                        key, (when - start).total_seconds()
                    )


def last_completed_timepoint(path: Path) -> int | None:
    """The N of the log's last ``Timepoint:N completed`` line (None: no such line).

    Reads the file's end first (a day's log is megabytes), the whole file only
    where the end holds no such line.
    """
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            start = max(0, size - _TAIL_BYTES)
            while True:
                fh.seek(start)
                found = _COMPLETED_RE.findall(fh.read(size - start))
                if found or start == 0:
                    return int(found[-1]) if found else None
                start = 0
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None


# --- the parser -----------------------------------------------------------------


class AcqLogParser(MetadataParser):
    """Parses ``*Acq.txt`` and ``*log.txt`` in the experiment folder."""

    name = "acqlog"

    def extract_metadata(self, path: str | Path) -> ExperimentMetadata:
        root = Path(path)
        meta = ExperimentMetadata()
        acq_file, log_file = find_files(root)
        if acq_file is None and log_file is None:
            log.warning("%s: no *Acq.txt or *log.txt: no metadata from the lab's files", root)
            return meta
        # The Acq file first: its channel table gives the channel order.
        if acq_file is not None:
            parse_acq(acq_file, meta)
            meta.attachments.append(acq_file)
        else:
            log.warning("%s: no *Acq.txt file", root)
        acq_kvps, meta.kvps = meta.kvps, []
        if log_file is not None:
            parse_log(log_file, meta)
            meta.attachments.append(log_file)
        else:
            log.warning("%s: no *log.txt file", root)
        # The human facts (aim, strains, ...) read first; no pair twice.
        meta.kvps = list(dict.fromkeys(meta.kvps + acq_kvps))
        return meta


__all__ = ["AcqLogParser", "find_files", "last_completed_timepoint", "parse_acq", "parse_log"]
