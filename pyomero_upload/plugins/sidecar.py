"""YAML/JSON sidecar metadata: ``experiment.yml`` / ``experiment.json``.

For labs without the Acq/log text files, or to correct them.  The schema
(every key optional)::

    description: Free text shown on the dataset and each image
    project: Morphology detection
    tags: [28-Sep-2018, Batgirl]
    kvps:                       # a mapping (a list value repeats the key) ...
      Strain: [Mig1-GFP, Dot6-GFP]
      Medium: 2% glucose in SC
    # ... or a list of [key, value] pairs
    acquisition:
      microscope: Microscope1
      started: 2018-09-28 17:18:14
      pixel_size_um: 0.182
      z_spacing_um: 0.6
      time_interval_s: 300
      n_timepoints: 288
      duration_s: 86400
      channels:
        - {name: GFP, exposure_ms: 60, excitation_nm: 470, emission_nm: 535, color: "#00FF00"}
      positions:
        - {name: pos001, x_um: 10846.5, y_um: 10208.1, z_um: 3431.425, group: "1",
           exposures_ms: {GFP: 60}}
    tables:                     # name: CSV file next to the sidecar, or inline
      Doses: doses.csv
      Media: {columns: [Port, Contents], rows: [[COM5, 2% glucose in SC]]}
    attachments: [protocol.pdf] # files next to the sidecar, attached as they are
    # read by `pyomero-upload watch` only (see watch_settings):
    dataset: run-42             # the dataset's name, with --dataset-from yaml
    complete: true              # the acquisition is finished: ready to upload
    owner: alice                # whose experiment it is (--as-user)

Unknown keys and wrong types are errors naming the file and the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..model import Acquisition, ChannelInfo, ExperimentMetadata, StagePosition, Tables
from .base import MetadataParser

if TYPE_CHECKING:  # pandas loads only where a sidecar has tables
    import pandas as pd

log = logging.getLogger(__name__)

SIDECAR_NAMES = ("experiment.yml", "experiment.yaml", "experiment.json")
#: Keys for ``pyomero-upload watch``, not metadata: name -> type.
WATCH_KEYS: dict[str, type] = {"dataset": str, "complete": bool, "owner": str}
_TOP_KEYS = {"description", "project", "tags", "kvps", "acquisition", "tables", "attachments",
             *WATCH_KEYS}
_ACQ_SCALARS = {
    "microscope": str,
    "pixel_size_um": float,
    "z_spacing_um": float,
    "time_interval_s": float,
    "n_timepoints": int,
    "duration_s": float,
}


def find_sidecar(root: Path) -> Path | None:
    for name in SIDECAR_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def _color(path: Path, value: Any) -> tuple[int, int, int]:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        try:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value):
        return (value[0], value[1], value[2])
    raise InputError(path, f"color {value!r}: use '#RRGGBB' or [R, G, B]")


def _typed(path: Path, where: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    try:
        if kind is str:
            return str(value)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{where}: expected a {kind.__name__}, got {value!r}") from None


def _check_keys(path: Path, where: str, data: Any, allowed: set[str]) -> dict:
    if not isinstance(data, dict):
        raise InputError(path, f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        names, ok = ", ".join(unknown), ", ".join(sorted(allowed))
        raise InputError(path, f"{where}: unknown key(s) {names}; allowed: {ok}")
    return data


def _load(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read sidecar ({exc})") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"not valid {path.suffix[1:].upper()}: {first}") from None
    return _check_keys(path, "top level", data or {}, _TOP_KEYS)


def watch_settings(path: Path) -> dict[str, Any]:
    """The :data:`WATCH_KEYS` a sidecar sets (``dataset``, ``complete``, ``owner``),
    type-checked; the rest of the file is checked for unknown keys only."""
    data = _load(path)
    out: dict[str, Any] = {}
    for key, kind in WATCH_KEYS.items():
        value = data.get(key)
        if value is None:
            continue
        if kind is bool and not isinstance(value, bool):
            raise InputError(path, f"{key}: expected true or false, got {value!r}")
        if kind is str and (not isinstance(value, str | int) or isinstance(value, bool)
                            or not str(value).strip()):
            raise InputError(path, f"{key}: expected a name, got {value!r}")
        out[key] = str(value).strip() if kind is str else value
    return out


def parse_sidecar(path: Path) -> ExperimentMetadata:
    """Read a sidecar file into the model."""
    data = _load(path)
    meta = ExperimentMetadata()
    meta.description = _typed(path, "description", data.get("description"), str) or ""
    meta.project = _typed(path, "project", data.get("project"), str)
    tags = data.get("tags") or []
    if not isinstance(tags, list):
        raise InputError(path, "tags: expected a list")
    meta.tags = list(dict.fromkeys(str(t) for t in tags))
    meta.kvps = _kvps(path, data.get("kvps") or [])
    if "acquisition" in data:
        meta.acquisition = _acquisition(path, data["acquisition"] or {})
    for name, spec in (data.get("tables") or {}).items():
        meta.tables[str(name)] = _table(path, str(name), spec)
    for item in data.get("attachments") or []:
        f = (path.parent / str(item)).resolve()
        if not f.is_file():
            raise InputError(path, f"attachments: {item} does not exist")
        meta.attachments.append(f)
    return meta


def _kvps(path: Path, value: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            for item in v if isinstance(v, list) else [v]:
                pairs.append((str(k), str(item)))
    elif isinstance(value, list):
        for item in value:
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise InputError(path, f"kvps: expected [key, value] pairs, got {item!r}")
            pairs.append((str(item[0]), str(item[1])))
    else:
        raise InputError(path, "kvps: expected a mapping or a list of [key, value] pairs")
    return pairs


def _named_entries(path: Path, data: dict, key: str, cls: type) -> Iterator[tuple[str, dict]]:
    """Each mapping in ``acquisition.<key>``: only ``cls``'s fields, a name required."""
    allowed = {f.name for f in fields(cls)}
    for i, item in enumerate(data.get(key) or []):
        where = f"acquisition.{key}[{i}]"
        item = _check_keys(path, where, item, allowed)
        if "name" not in item:
            raise InputError(path, f"{where}: name is required")
        yield where, item


def _acquisition(path: Path, data: Any) -> Acquisition:
    allowed = set(_ACQ_SCALARS) | {"started", "channels", "positions"}
    data = _check_keys(path, "acquisition", data, allowed)
    acq = Acquisition()
    for key, kind in _ACQ_SCALARS.items():
        setattr(acq, key, _typed(path, f"acquisition.{key}", data.get(key), kind))
    started = data.get("started")
    if isinstance(started, str):
        try:
            started = datetime.fromisoformat(started)
        except ValueError:
            problem = f"acquisition.started: not a date and time: {started!r}"
            raise InputError(path, problem) from None
    if started is not None and not isinstance(started, datetime):
        raise InputError(path, f"acquisition.started: not a date and time: {started!r}")
    acq.started = started
    for where, ch in _named_entries(path, data, "channels", ChannelInfo):
        acq.channels.append(
            ChannelInfo(
                str(ch["name"]),
                _typed(path, f"{where}.exposure_ms", ch.get("exposure_ms"), float),
                _typed(path, f"{where}.excitation_nm", ch.get("excitation_nm"), float),
                _typed(path, f"{where}.emission_nm", ch.get("emission_nm"), float),
                _color(path, ch["color"]) if ch.get("color") is not None else None,
            )
        )
    for where, p in _named_entries(path, data, "positions", StagePosition):
        acq.positions[str(p["name"])] = StagePosition(
            str(p["name"]),
            _typed(path, f"{where}.x_um", p.get("x_um"), float),
            _typed(path, f"{where}.y_um", p.get("y_um"), float),
            _typed(path, f"{where}.z_um", p.get("z_um"), float),
            _typed(path, f"{where}.group", p.get("group"), str),
            {str(k): _typed(path, f"{where}.exposures_ms", v, float)
             for k, v in (p.get("exposures_ms") or {}).items()},
        )
    return acq


def _table(path: Path, name: str, spec: Any) -> pd.DataFrame:
    import pandas as pd

    if isinstance(spec, str):
        csv = path.parent / spec
        try:
            return pd.read_csv(csv)
        except Exception as exc:
            raise InputError(csv, f"table {name}: cannot read CSV ({exc})") from None
    spec = _check_keys(path, f"tables.{name}", spec, {"columns", "rows"})
    try:
        df = pd.DataFrame(spec.get("rows") or [], columns=spec.get("columns"))
    except Exception as exc:
        raise InputError(path, f"tables.{name}: {exc}") from None
    return df.infer_objects()


def merge(base: ExperimentMetadata, over: ExperimentMetadata) -> ExperimentMetadata:
    """``over`` (the sidecar) wins wherever it says something; lists are combined."""
    out = ExperimentMetadata(
        description=over.description or base.description,
        tags=list(dict.fromkeys(base.tags + over.tags)),
        project=over.project or base.project,
        tables=Tables({**base.tables, **over.tables}),
        attachments=list(dict.fromkeys(base.attachments + over.attachments)),
    )
    over_keys = {k for k, _ in over.kvps}
    out.kvps = [kv for kv in base.kvps if kv[0] not in over_keys] + over.kvps
    a, b = base.acquisition, over.acquisition
    acq = out.acquisition
    for f in fields(Acquisition):
        if f.name in ("channels", "positions", "plane_offsets_s"):
            continue
        value = getattr(b, f.name)
        setattr(acq, f.name, value if value is not None else getattr(a, f.name))
    acq.plane_offsets_s = {**a.plane_offsets_s, **b.plane_offsets_s}
    by_name = {c.name.lower(): c for c in b.channels}
    for c in a.channels:
        o = by_name.pop(c.name.lower(), None)
        acq.channels.append(
            c
            if o is None
            else ChannelInfo(
                c.name,
                *(
                    getattr(o, k) if getattr(o, k) is not None else getattr(c, k)
                    for k in ("exposure_ms", "excitation_nm", "emission_nm", "color")
                ),
            )
        )
    acq.channels += list(by_name.values())
    acq.positions = {**a.positions, **b.positions}
    return out


class SidecarParser(MetadataParser):
    """Only ``experiment.yml`` / ``experiment.json`` (no metadata, with a warning, where
    there is neither)."""

    name = "sidecar"

    def extract_metadata(self, path: str | Path) -> ExperimentMetadata:
        sidecar = find_sidecar(Path(path))
        if sidecar is None:
            log.warning("%s: no experiment.yml or experiment.json", path)
            return ExperimentMetadata()
        return parse_sidecar(sidecar)
