"""What every metadata parser returns: :class:`ExperimentMetadata` and its parts.

Plain typed dataclasses: no OMERO, no I/O.  Parsers (the lab's Acq/log files,
YAML/JSON sidecars, plug-ins) fill them in; :mod:`pyomero_upload.describe`
turns them, with the experiment's layout, into the writers' model
(:class:`~pyomero_upload.describe.ImageSpec`).  The annotation namespaces every
writer uses are here too.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tables are built by the parsers; the model itself needs no pandas
    import pandas as pd

#: OMERO's namespace for key-value pairs that OMERO.web shows as editable.
CLIENT_MAP_NS = "openmicroscopy.org/omero/client/mapAnnotation"
#: Our namespace for provenance pairs.
PROVENANCE_NS = "pyomero-upload/provenance"
#: Our namespace for the record of planes filled with zeros (--allow-missing).
FILLED_NS = "pyomero-upload/filled-planes"
#: Our namespace for an uploaded image's state (fingerprint, complete or not) and
#: for the dataset's "annotations complete" marker.
SOURCE_NS = "pyomero-upload/source"
#: Our namespace for attached raw files (the Acq and log files, attachments).
ATTACHMENT_NS = "pyomero-upload/attachment"
#: Our namespace for a run's claim on a dataset (one writer per dataset).
CLAIM_NS = "pyomero-upload/claim"
#: OMERO's namespace for tables (OMERO.tables / bulk annotations).
BULK_ANNOTATIONS_NS = "openmicroscopy.org/omero/bulk_annotations"


@dataclass
class ChannelInfo:
    """One optical channel as the acquisition describes it."""

    name: str
    exposure_ms: float | None = None
    excitation_nm: float | None = None
    emission_nm: float | None = None
    #: Display colour as (R, G, B), 0-255 each; None means "derive from the name".
    color: tuple[int, int, int] | None = None


@dataclass
class StagePosition:
    """One stage position from the acquisition's Points table."""

    name: str
    x_um: float | None = None
    y_um: float | None = None
    z_um: float | None = None
    group: str | None = None
    #: Per-channel exposure in ms at this position.
    exposures_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Acquisition:
    """Physical acquisition settings; every field may be unknown (None/empty)."""

    channels: list[ChannelInfo] = field(default_factory=list)
    z_spacing_um: float | None = None
    time_interval_s: float | None = None
    n_timepoints: int | None = None
    duration_s: float | None = None
    positions: dict[str, StagePosition] = field(default_factory=dict)
    started: datetime | None = None
    pixel_size_um: float | None = None
    microscope: str | None = None
    #: Seconds from ``started`` to each plane group, from the machine log:
    #: {position: {(timepoint number, 1-based, channel): seconds}}.
    plane_offsets_s: dict[str, dict[tuple[int, str], float]] = field(default_factory=dict)

    def channel(self, name: str) -> ChannelInfo | None:
        for ch in self.channels:
            if ch.name.lower() == name.lower():
                return ch
        return None


class Table:
    """A typed table as a parser reads it: named columns of int, float or text.

    Parsing needs no pandas (``plan`` starts in a fraction of a second); the
    table becomes a DataFrame, with the same column dtypes, where one is used.
    """

    def __init__(self, columns: dict[str, list[Any]], dtypes: dict[str, str]):
        self.columns = columns
        #: pandas dtype of each column: "int64", "float64" or "object".
        self.dtypes = dtypes

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, values, strict=True))
                for values in zip(*self.columns.values(), strict=True)]

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({name: pd.Series(values, dtype=self.dtypes[name])
                             for name, values in self.columns.items()})


class Tables(MutableMapping[str, "pd.DataFrame"]):
    """Name -> DataFrame, where a parser's :class:`Table` is converted on first access."""

    def __init__(self, items: Any = ()):
        self._items: dict[str, Any] = {}
        self.update(dict(items))

    def __getitem__(self, name: str) -> pd.DataFrame:
        value = self._items[name]
        if isinstance(value, Table):
            value = self._items[name] = value.to_frame()
        return value

    def __setitem__(self, name: str, value: pd.DataFrame | Table) -> None:
        self._items[name] = value

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Tables({list(self._items)})"

    def layout(self, name: str) -> tuple[list[str], list[str], int]:
        """Column names, dtype names and row count of a table, without making a
        DataFrame of a parser's :class:`Table` (so without importing pandas)."""
        value = self._items[name]
        if isinstance(value, Table):
            names = list(value.columns)
            rows = len(value.columns[names[0]]) if names else 0
            return names, [value.dtypes[n] for n in names], rows
        return [str(c) for c in value.columns], [str(t) for t in value.dtypes], int(len(value))


@dataclass
class ExperimentMetadata:
    """Everything known about an experiment besides its pixels."""

    description: str = ""
    tags: list[str] = field(default_factory=list)
    kvps: list[tuple[str, str]] = field(default_factory=list)
    #: Tables by name (pandas DataFrames; parsers may store a :class:`Table`).
    tables: Tables = field(default_factory=Tables)
    acquisition: Acquisition = field(default_factory=Acquisition)
    attachments: list[Path] = field(default_factory=list)
    project: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tables, Tables):
            self.tables = Tables(self.tables)

    def channel_order(self) -> list[str]:
        return [c.name for c in self.acquisition.channels]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``metadata --json``)."""
        acq = self.acquisition
        return {
            "description": self.description,
            "tags": list(self.tags),
            "kvps": [[k, v] for k, v in self.kvps],
            "project": self.project,
            "tables": {
                name: dict(zip(("columns", "dtypes", "rows"), self.tables.layout(name),
                               strict=True))
                for name in self.tables
            },
            "acquisition": {
                "channels": [
                    {
                        "name": c.name,
                        "exposure_ms": c.exposure_ms,
                        "excitation_nm": c.excitation_nm,
                        "emission_nm": c.emission_nm,
                        "color": list(c.color) if c.color else None,
                    }
                    for c in acq.channels
                ],
                "z_spacing_um": acq.z_spacing_um,
                "time_interval_s": acq.time_interval_s,
                "n_timepoints": acq.n_timepoints,
                "duration_s": acq.duration_s,
                "positions": [
                    {
                        "name": p.name,
                        "x_um": p.x_um,
                        "y_um": p.y_um,
                        "z_um": p.z_um,
                        "group": p.group,
                        "exposures_ms": p.exposures_ms,
                    }
                    for p in acq.positions.values()
                ],
                "started": acq.started.isoformat() if acq.started else None,
                "pixel_size_um": acq.pixel_size_um,
                "microscope": acq.microscope,
            },
            "attachments": [str(p) for p in self.attachments],
        }


# Display colour and typical wavelengths (nm) by fluorophore or contrast
# method, matched on the start of the channel name (case-insensitive):
# (colour RGB, excitation, emission).  Transmitted-light channels are grey.
_Known = tuple[tuple[str, ...], tuple[int, int, int], float | None, float | None]
_KNOWN_CHANNELS: list[_Known] = [
    (("brightfield", "bright", "bf", "dic", "phase", "trans", "pc"), (255, 255, 255), None, None),
    (("gfp", "egfp", "fitc", "alexa488", "af488", "green"), (0, 255, 0), 488.0, 509.0),
    (("yfp", "venus", "citrine"), (255, 255, 0), 514.0, 527.0),
    (("cfp", "cerulean", "turquoise"), (0, 255, 255), 433.0, 475.0),
    (("dapi", "hoechst", "bfp", "blue"), (0, 0, 255), 358.0, 461.0),
    (("mcherry", "cherry", "rfp", "tdtomato", "mkate", "texasred", "red"), (255, 0, 0), 587.0, 610.0),  # noqa: E501
    (("cy3", "tritc", "alexa555"), (255, 128, 0), 550.0, 570.0),
    (("cy5", "alexa647", "af647", "farred"), (255, 0, 255), 649.0, 670.0),
]


def channel_defaults(name: str) -> ChannelInfo:
    """Colour and typical wavelengths for a channel, guessed from its name.

    ``GFP``, ``GFPFast`` and ``gfp_1`` are green; ``Brightfield`` and
    ``DIC`` grey; unknown names get white and no wavelengths.
    """
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    for prefixes, color, ex, em in _KNOWN_CHANNELS:
        # Two-letter tokens (bf, pc) must match whole, or "bfp" would be brightfield.
        if any(key == p or (len(p) > 2 and key.startswith(p)) for p in prefixes):
            return ChannelInfo(name, None, ex, em, color)
    return ChannelInfo(name, None, None, None, (255, 255, 255))
