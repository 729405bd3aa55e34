"""Layout discovery: find the position folders and index every plane file.

An experiment folder holds one sub-folder per stage position (``pos001``,
``pos002`` ...) and, in each, one file per plane named
``{prefix}_{T}_{C}_{Z}.{ext}``.  :func:`discover` turns that into an
:class:`Experiment`: the positions in natural order, the distinct T and Z
values, a deterministic channel order, and for every position a map from
(T, C, Z) to its file, plane size and pixel type (read from every plane's
header).  Sizes are counts of distinct values, never the largest index, so
0-based and 1-based numbering both work.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:  # numpy and the decoders load on first use: `--help` needs neither
    import numpy as np

    from .planes import PlaneInfo

log = logging.getLogger(__name__)

DEFAULT_POSITION_PATTERN = r"pos\d+"
DEFAULT_PLANE_PATTERN = "{prefix}_{T}_{C}_{Z}.{ext}"

# What each template field of a plane pattern may match.
_FIELD_REGEX = {
    "prefix": r"(?P<prefix>.+)",
    "T": r"(?P<T>\d+)",
    "Z": r"(?P<Z>\d+)",
    "C": r"(?P<C>[^_./\\]+)",
    "ext": r"(?P<ext>png|tiff?|jpe?g|bmp|webp)",
}
_TEMPLATE_FIELD = re.compile(r"\{(\w+)\}")

PlaneKey = tuple[int, str, int]  # (T, channel, Z) as found in the file names


def natural_key(text: str) -> tuple:
    """Sort key that orders ``pos2`` before ``pos10``."""
    return tuple(
        (0, int(part), part) if part.isdigit() else (1, 0, part.lower())
        for part in re.split(r"(\d+)", text)
        if part
    )


def compile_plane_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a plane-name pattern.

    ``pattern`` is either a template with the fields ``{T}``, ``{C}``,
    ``{Z}`` (each optional), ``{prefix}`` and ``{ext}``, such as the default
    ``{prefix}_{T}_{C}_{Z}.{ext}``, or a regular expression with named
    groups ``T``, ``C`` and ``Z`` (recognised by ``(?P<``).  Matching is
    case-insensitive and against the whole file name.
    """
    if "(?P<" in pattern:
        regex = pattern
    else:
        parts, pos = [], 0
        for m in _TEMPLATE_FIELD.finditer(pattern):
            name = m.group(1)
            if name not in _FIELD_REGEX:
                raise ValueError(
                    f"unknown field {{{name}}} in plane pattern {pattern!r}; "
                    f"use {', '.join('{' + k + '}' for k in _FIELD_REGEX)}"
                )
            parts.append(re.escape(pattern[pos : m.start()]))
            parts.append(_FIELD_REGEX[name])
            pos = m.end()
        parts.append(re.escape(pattern[pos:]))
        regex = "".join(parts)
    try:
        compiled = re.compile(regex, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid plane pattern {pattern!r}: {exc}") from None
    if not {"T", "C", "Z"} & set(compiled.groupindex):
        raise ValueError(f"plane pattern {pattern!r} has none of the fields T, C, Z")
    return compiled


@dataclass(frozen=True)
class NamingRule:
    """How position folders and plane files are named."""

    position_pattern: str = DEFAULT_POSITION_PATTERN
    plane_pattern: str = DEFAULT_PLANE_PATTERN

    def position_regex(self) -> re.Pattern[str]:
        try:
            return re.compile(self.position_pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"invalid position pattern {self.position_pattern!r}: {exc}") from None

    def plane_regex(self) -> re.Pattern[str]:
        return compile_plane_pattern(self.plane_pattern)


@dataclass
class Position:
    """One stage position: the files of its planes, keyed by (T, C, Z)."""

    name: str
    path: Path
    files: dict[PlaneKey, Path]
    shape: tuple[int, int] | None = None
    dtype: np.dtype | None = None
    missing: list[PlaneKey] = field(default_factory=list)

    def read_plane(self, path: Path | None) -> np.ndarray:
        """Decode one of this position's planes (zeros where ``path`` is None,
        a plane filled by --allow-missing); its size and type must match."""
        if self.shape is None or self.dtype is None:
            raise InputError(
                self.path,
                "plane size and pixel type unknown: index the experiment with discover() "
                "before reading planes",
            )
        if path is None:
            import numpy as np

            return np.zeros(self.shape, self.dtype)
        from .planes import read_plane

        plane = read_plane(path)
        if plane.shape != self.shape or plane.dtype != self.dtype:
            raise InputError(
                path,
                f"decoded plane is {plane.dtype.name} {plane.shape[1]}x{plane.shape[0]}, "
                f"expected {self.dtype.name} {self.shape[1]}x{self.shape[0]} "
                f"like the rest of {self.name}",
            )
        return plane


@dataclass
class Experiment:
    """An experiment folder, indexed.  Every position has the same T/C/Z sets."""

    root: Path
    positions: list[Position]
    t_values: list[int]
    channels: list[str]
    z_values: list[int]
    ignored: list[Path] = field(default_factory=list)

    @property
    def size_t(self) -> int:
        return len(self.t_values)

    @property
    def size_c(self) -> int:
        return len(self.channels)

    @property
    def size_z(self) -> int:
        return len(self.z_values)

    @property
    def planes_per_position(self) -> int:
        return self.size_t * self.size_c * self.size_z

    def plane_keys(self) -> list[PlaneKey]:
        """(T, C, Z) of every plane in OME ``XYZCT`` order: Z fastest, then C, then T."""
        return [(t, c, z) for t in self.t_values for c in self.channels for z in self.z_values]

    def plane_paths(self, position: Position) -> list[Path | None]:
        """The file of every plane of ``position`` in XYZCT order; None where missing."""
        return [position.files.get(key) for key in self.plane_keys()]

    def position_nbytes(self, position: Position) -> int:
        if position.shape is None or position.dtype is None:
            return 0
        y, x = position.shape
        return y * x * position.dtype.itemsize * self.planes_per_position

    def for_task(self, position: Position) -> Experiment:
        """What a task that writes ``position`` elsewhere (a Dask worker) needs of
        this experiment: the same folder, sets and that position, with the first
        position beside it (describing a position counts time from the first
        position's first plane) and no other position's files.

        A task's arguments are pickled for the scheduler and each worker: the
        whole experiment would send every plane's path with every position.
        """
        first = self.positions[0]
        keep = [first] if position is first else [first, position]
        return replace(self, positions=keep, ignored=[])

    def reorder_channels(self, preferred: Sequence[str]) -> None:
        """Put the ``preferred`` channels first (e.g. the acquisition's order)."""
        rank = {c: (i, 0) for i, c in enumerate(self.channels)}
        self.channels = order_channels(rank, preferred)

    @property
    def nbytes(self) -> int:
        return sum(self.position_nbytes(p) for p in self.positions)

    @property
    def missing(self) -> list[tuple[str, int, str, int]]:
        return [(p.name, *key) for p in self.positions for key in p.missing]

    def to_dict(self) -> dict:
        """A JSON-ready summary (what ``plan --json`` prints)."""
        return {
            "root": str(self.root),
            "positions": [
                {
                    "name": p.name,
                    "planes": len(p.files),
                    "size_x": p.shape[1] if p.shape else None,
                    "size_y": p.shape[0] if p.shape else None,
                    "pixel_type": p.dtype.name if p.dtype is not None else None,
                    "bytes": self.position_nbytes(p),
                    "missing": [{"T": t, "C": c, "Z": z} for t, c, z in p.missing],
                }
                for p in self.positions
            ],
            "size_t": self.size_t,
            "size_c": self.size_c,
            "size_z": self.size_z,
            "t_values": self.t_values,
            "z_values": self.z_values,
            "channels": self.channels,
            "dimension_order": "XYZCT",
            "planes": self.planes_per_position * len(self.positions),
            "missing": len(self.missing),
            "bytes": self.nbytes,
            "ignored_files": [str(p) for p in self.ignored],
        }


def _format_missing(missing: Sequence[tuple[str, int, str, int]], limit: int = 20) -> str:
    shown = "; ".join(f"{p} T={t} C={c} Z={z}" for p, t, c, z in missing[:limit])
    if len(missing) > limit:
        shown += f"; and {len(missing) - limit} more"
    return shown


def order_channels(
    found: dict[str, tuple[int, int]], preferred: Sequence[str] | None
) -> list[str]:
    """Deterministic channel order.

    ``found`` maps each channel to the (T, Z) where it first appears.  The
    default order is by that first appearance, ties broken by natural name
    order, so it never depends on file-system or hash order.  ``preferred``
    (from the experiment's metadata or the user) goes first, matched
    case-insensitively; channels it does not name follow in default order.
    """
    default = sorted(found, key=lambda c: (found[c], natural_key(c)))
    if not preferred:
        return default
    by_lower = {c.lower(): c for c in default}
    ordered: list[str] = []
    for name in preferred:
        match = by_lower.get(name.strip().lower())
        if match is not None and match not in ordered:
            ordered.append(match)
    return ordered + [c for c in default if c not in ordered]


def find_positions(root: Path, rule: NamingRule) -> list[tuple[str, Path]]:
    """The position folders of ``root`` in natural order."""
    regex = rule.position_regex()
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        raise InputError(root, "folder does not exist") from None
    except NotADirectoryError:
        raise InputError(root, "is not a folder") from None
    except PermissionError:
        raise InputError(root, "permission denied") from None
    positions = [
        (e.name, Path(e.path))
        for e in entries
        if e.is_dir() and not e.name.startswith(".") and regex.fullmatch(e.name)
    ]
    if not positions:
        what = "is empty" if not entries else "has no position folders"
        raise InputError(
            root,
            f"{what}: expected sub-folders matching {rule.position_pattern!r} "
            "(one per stage position, e.g. pos001); see --position-pattern",
        )
    return sorted(positions, key=lambda np_: natural_key(np_[0]))


def _index_position(
    name: str, path: Path, plane_re: re.Pattern[str], ignored: list[Path]
) -> dict[PlaneKey, Path]:
    files: dict[PlaneKey, Path] = {}
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            log.debug("ignoring %s (hidden or not a file)", entry.path)
            ignored.append(Path(entry.path))
            continue
        m = plane_re.fullmatch(entry.name)
        if m is None:
            log.debug("ignoring %s (does not match the plane pattern)", entry.path)
            ignored.append(Path(entry.path))
            continue
        groups = m.groupdict()
        t = int(groups["T"]) if groups.get("T") is not None else 0
        z = int(groups["Z"]) if groups.get("Z") is not None else 0
        c = groups.get("C") or "C0"
        key = (t, c, z)
        if key in files:
            raise InputError(
                entry.path,
                f"same plane (T={t}, C={c}, Z={z}) as {files[key].name} in {name}",
            )
        files[key] = Path(entry.path)
    if not files:
        raise InputError(path, "position folder has no image planes matching the plane pattern")
    return files


def _unify_channel_case(positions: list[tuple[str, Path, dict[PlaneKey, Path]]]) -> None:
    """Treat ``GFP`` and ``gfp`` as one channel, spelled as first seen."""
    spelling: dict[str, str] = {}
    for _, _, files in positions:
        for key in sorted(files, key=lambda k: (k[0], k[2], k[1])):
            spelling.setdefault(key[1].lower(), key[1])
    for i, (name, path, files) in enumerate(positions):
        renamed: dict[PlaneKey, Path] = {}
        for (t, c, z), f in files.items():
            key = (t, spelling[c.lower()], z)
            if key in renamed:
                raise InputError(f, f"same plane (T={t}, C={c}, Z={z}) as {renamed[key].name}")
            renamed[key] = f
        positions[i] = (name, path, renamed)


#: Plane headers read per task when probing in threads.
PROBE_BATCH = 64
#: Above this many seconds a header (timed over the first batch), the headers
#: are read by threads: a network share answers in a millisecond or so, and
#: threads overlap those waits.  Below it (a local disk, a warm cache: about
#: 10 microseconds) the calling thread reads them alone, since there threads
#: only pass the GIL back and forth: 7,500 headers took 0.12 s with 2 threads
#: and 0.07 s with one on the benchmark VM.
PROBE_SLOW_HEADER = 50e-6


def _plane_infos(files: list[Path], workers: int) -> Generator[PlaneInfo, None, None]:
    """Each file's header (:func:`~pyomero_upload.planes.probe_plane`), in order;
    an unreadable file raises when its turn comes."""
    from .planes import probe_plane

    head, rest = files[:PROBE_BATCH], files[PROBE_BATCH:]
    start = time.perf_counter()
    yield from map(probe_plane, head)
    slow = (time.perf_counter() - start) / max(len(head), 1) > PROBE_SLOW_HEADER
    if not slow or workers <= 1 or len(rest) <= PROBE_BATCH:
        yield from map(probe_plane, rest)
        return
    from concurrent.futures import ThreadPoolExecutor

    # In batches: a header takes microseconds, a future per file would cost more.
    batches = [rest[i : i + PROBE_BATCH] for i in range(0, len(rest), PROBE_BATCH)]
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for infos in pool.map(lambda batch: [probe_plane(f) for f in batch], batches):
            yield from infos
    finally:  # closed early (a bad file): the batches not started are dropped
        pool.shutdown(wait=True, cancel_futures=True)


def probe_positions(exp: Experiment, workers: int | None = None) -> None:
    """Read every plane's header; set each position's shape and pixel type.

    Raises:
        InputError: On the first file that is unreadable, not greyscale, or
            differs in shape or pixel type from the rest of its position.
    """
    jobs = [(p, key, f) for p in exp.positions for key, f in sorted(p.files.items())]
    infos = _plane_infos([f for _, _, f in jobs], workers or os.cpu_count() or 1)
    try:
        first: dict[str, tuple[Path, PlaneInfo]] = {}
        for (pos, _key, f), info in zip(jobs, infos, strict=True):
            if pos.name not in first:
                first[pos.name] = (f, info)
                pos.shape, pos.dtype = info.shape, info.dtype
                continue
            ref_file, ref = first[pos.name]
            if info.shape != ref.shape:
                raise InputError(
                    f,
                    f"plane is {info.shape[1]}x{info.shape[0]} but {ref_file.name} in "
                    f"{pos.name} is {ref.shape[1]}x{ref.shape[0]}; all planes of a "
                    "position must have one size",
                )
            if info.dtype != ref.dtype:
                raise InputError(
                    f,
                    f"pixel type {info.dtype.name} but {ref_file.name} in {pos.name} is "
                    f"{ref.dtype.name}; all planes of a position must have one pixel type",
                )
    finally:
        infos.close()  # a raise above: the threads still reading are waited for


def discover(
    root: str | os.PathLike[str],
    rule: NamingRule | None = None,
    channel_order: Sequence[str] | None = None,
    allow_missing: bool = False,
    workers: int | None = None,
    probe: bool = True,
) -> Experiment:
    """Index an experiment folder.

    Args:
        root: The experiment folder (holding the position folders).
        rule: Naming rule for position folders and plane files.
        channel_order: Preferred channel order (from metadata or the user).
        allow_missing: If False, any plane missing from any position is an
            error naming each one; if True they are recorded in
            ``Position.missing`` and the writers fill them with zeros.
        workers: Threads for reading every plane's header (which gives each
            position's shape and pixel type, and rejects mixed ones) where the
            headers come slowly (:data:`PROBE_SLOW_HEADER`); default all cores.
        probe: Read every plane's header (False: names only, as ``watch`` checks
            whether every expected plane is there; shapes stay unknown).

    Returns:
        The indexed experiment, every position probed (unless ``probe`` is False).

    Raises:
        InputError: The folder, a position or a plane file cannot be used
            (the message names it).
    """
    root = Path(root)
    rule = rule or NamingRule()
    plane_re = rule.plane_regex()
    ignored: list[Path] = []
    indexed = [
        (name, path, _index_position(name, path, plane_re, ignored))
        for name, path in find_positions(root, rule)
    ]
    _unify_channel_case(indexed)

    t_values = sorted({k[0] for _, _, files in indexed for k in files})
    z_values = sorted({k[2] for _, _, files in indexed for k in files})
    first_seen: dict[str, tuple[int, int]] = {}
    for _, _, files in indexed:
        for t, c, z in files:
            if c not in first_seen or (t, z) < first_seen[c]:
                first_seen[c] = (t, z)
    channels = order_channels(first_seen, channel_order)

    exp = Experiment(root, [], t_values, channels, z_values, ignored)
    expected = exp.plane_keys()
    for name, path, files in indexed:
        missing = [k for k in expected if k not in files]
        exp.positions.append(Position(name, path, files, missing=missing))
    if exp.missing and not allow_missing:
        raise InputError(
            root,
            f"{len(exp.missing)} missing plane(s): {_format_missing(exp.missing)} "
            "(use --allow-missing to fill them with zeros)",
        )
    if probe:
        probe_positions(exp, workers)
    return exp
