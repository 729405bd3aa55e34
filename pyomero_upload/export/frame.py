"""The export frame: what every writer does around its own format, written once.

:func:`run_export` makes and locks ``OUT/<dataset>``, removes what a killed
export left there, builds the ``metadata/`` folder beside the pixels, decides
per position what to write, skip or replace (:func:`outputs_to_write`), and
runs the one per-position loop: decode (in threads, a bounded number ahead) ->
describe -> write.  A writer (:class:`ImageWriter`) supplies only what is its
own: the per-plane work done in the decode threads, ``write()``, a
fingerprint reader and the names of its temporaries.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..describe import (
    ImageSpec,
    describe,
    fingerprint_settings,
    provenance_pairs,
    source_fingerprint,
)
from ..errors import InputError
from ..layout import Experiment, Position
from ..model import ExperimentMetadata
from ..parallel import default_workers, ordered_map, prefetch_window
from .folder import (
    FolderLock,
    MetadataFolder,
    prepare_out_dir,
    remove_empty,
    remove_stale_temporaries,
)

if TYPE_CHECKING:
    from ..engine import Engine


#: Planes each decode task takes: the writer is woken once per batch, not per plane.
DECODE_BATCH = 4


@dataclass
class ExportEntry:
    """One position's output and what the export did with it."""

    position: str
    path: Path
    #: ``created`` (new), ``replaced`` (made from other data, with overwrite)
    #: or ``skipped`` (already up to date).
    status: str


@dataclass
class ExportResult:
    """What an export wrote (and skipped as already up to date)."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    metadata_dir: Path | None = None
    planes: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    #: ``ome-tiff`` or ``ome-zarr``.
    format: str = ""
    #: Every position's output, in position order once the export is done.
    entries: list[ExportEntry] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the user: what was written, how much, how fast, where."""
        line = (
            f"wrote {len(self.files)} file(s), {self.planes} planes, "
            f"{self.nbytes / 1e6:.1f} MB in {self.seconds:.1f} s to {self.out_dir}"
        )
        if self.skipped:
            line += f"; {len(self.skipped)} up to date, skipped"
        return line

    def to_dict(self) -> dict[str, Any]:
        """The report ``export --json`` prints: every output with its status."""
        return {
            "format": self.format,
            "out_dir": str(self.out_dir),
            "dataset": self.out_dir.name,
            "outputs": [{"position": e.position, "path": str(e.path), "status": e.status}
                        for e in self.entries],
            "metadata_dir": str(self.metadata_dir) if self.metadata_dir else None,
            "planes": self.planes,
            "bytes": self.nbytes,
            "seconds": round(self.seconds, 3),
        }


class ImageWriter(ABC):
    """What one output format supplies to :func:`run_export`.

    One instance is made per export, holding that export's format options.
    """

    #: The format's name, as ``export --format`` has it.
    format: ClassVar[str]
    #: An output's name is ``<position><suffix>``.
    suffix: ClassVar[str]
    #: Regular expressions (without the leading dot, matched whole) of the hidden
    #: temporaries the writer makes in the dataset folder; a later export removes
    #: them as an interrupted run's leftovers, and nothing else.
    temporaries: ClassVar[tuple[str, ...]]
    #: In one process, start the ``metadata/`` folder with the last position rather
    #: than after it: its imports (pandas, PyTables: 0.25 s of one core) then
    #: overlap the last planes instead of following them.  A writer that holds
    #: much of a position in memory says no, as their peaks would add up.
    metadata_with_last_position: ClassVar[bool] = True

    @abstractmethod
    def fingerprint_options(self, provenance: bool) -> tuple[object, ...]:
        """Everything besides the source planes and metadata that decides an output's content."""

    @abstractmethod
    def read_fingerprint(self, target: Path) -> str | None:
        """The source fingerprint recorded in an output we wrote (None: not ours or damaged)."""

    def present(self, target: Path) -> bool:
        """Whether something already stands at ``target``."""
        return target.exists()

    def plane_work(self, position: Position) -> Callable[[int, Path | None], Any]:
        """The per-plane work run in the decode threads, called with the plane's
        index in the position (XYZCT order) and its file; by default, decoding.

        Called for each position before its planes are decoded (and before
        :meth:`write` is called for it)."""
        read = position.read_plane
        return lambda index, path: read(path)

    @abstractmethod
    def write(self, spec: ImageSpec, planes: Iterator[Any], target: Path,
              on_plane: Callable[[int], None] | None) -> None:
        """Write one image from ``planes`` (what :meth:`plane_work` returned, in XYZCT
        order) to ``target``, atomically: complete, or not there at all."""


def known_temporaries() -> list[str]:
    """The temporaries of every writer: any of them may have been killed in this folder."""
    from .ome_tiff_writer import OmeTiffWriter
    from .ome_zarr_writer import OmeZarrWriter

    return [*OmeTiffWriter.temporaries, *OmeZarrWriter.temporaries]


def run_export(
    exp: Experiment,
    out: str | os.PathLike[str],
    dataset: str | None,
    writer: ImageWriter,
    *,
    metadata: ExperimentMetadata | None = None,
    provenance: bool = True,
    workers: int | None = None,
    overwrite: bool = False,
    on_plane: Callable[[int], None] | None = None,
    engine: Engine | None = None,
) -> ExportResult:
    """Write ``OUT/<dataset>/<position><writer.suffix>`` for every position.

    Args:
        exp: The experiment, discovered (and probed).
        out: The output folder; the dataset is a sub-folder of it.
        dataset: The dataset folder's name (default: the experiment folder's).
        writer: The format.
        metadata: The experiment's metadata, for the images and ``metadata/``.
        provenance: Record the tool, version and time in each image.
        workers: Decode threads (default: all cores).
        overwrite: Replace outputs written from other source planes or settings.
        on_plane: Called with the byte count of each plane written (with an
            ``engine``, of each position).
        engine: Run each position as a task on Dask (:mod:`pyomero_upload.engine`);
            this process keeps the lock, the fingerprints and ``metadata/``, and
            ``workers`` is then the decode threads per task.

    Returns:
        What was written and skipped.

    Raises:
        InputError: The output cannot be written, or an output exists that was
            written from other data (without ``overwrite``); raised before
            anything is written.

    The dataset folder is locked while the export runs; temporaries that an
    earlier, killed export left there are removed first.  ``metadata/`` is
    put in place only if every image was written.  On failure the folders
    this run created are removed if nothing was written or kept in them.
    """
    if any(p.shape is None for p in exp.positions):
        raise ValueError("experiment was discovered without probing; shapes are unknown")
    start = time.perf_counter()
    settings = fingerprint_settings(metadata, *writer.fingerprint_options(provenance))
    dataset = dataset or exp.root.resolve().name
    out_dir, created = prepare_out_dir(exp, Path(out), dataset)
    result = ExportResult(out_dir, format=writer.format)
    try:
        with FolderLock(out_dir):
            remove_stale_temporaries(out_dir, known_temporaries())
            todo = outputs_to_write(exp, result, settings, writer, overwrite)
            # metadata/ is built while the positions are written where this process
            # only waits for workers (an engine).  Here, where its cores decode, it
            # starts with the last position (or after it, where the writer says so):
            # pandas and PyTables then take the GIL from the decoders for the last
            # planes only, and load once most planes' buffers are freed.
            folder = MetadataFolder.start(metadata, out_dir) if engine is not None else None

            def start_folder() -> None:
                nonlocal folder
                if folder is None:
                    folder = MetadataFolder.start(metadata, out_dir)

            try:
                _write_positions(exp, result, writer, todo, metadata=metadata,
                                 provenance=provenance, workers=workers or default_workers(),
                                 on_plane=on_plane, engine=engine,
                                 on_last=start_folder if writer.metadata_with_last_position
                                 else None)
                if engine is not None:  # what workers that died mid-position left
                    remove_stale_temporaries(out_dir, known_temporaries(), folder=False)
                else:
                    start_folder()
                if folder is not None:
                    result.metadata_dir = folder.commit()
            finally:
                if folder is not None:
                    folder.discard()
    except BaseException:
        if not result.files and not result.skipped:
            remove_empty(created)
        raise
    order = {p.name: i for i, p in enumerate(exp.positions)}
    result.entries.sort(key=lambda e: order[e.position])
    result.seconds = time.perf_counter() - start
    return result


def outputs_to_write(
    exp: Experiment,
    result: ExportResult,
    settings: str,
    writer: ImageWriter,
    overwrite: bool,
) -> list[tuple[Position, Path, str]]:
    """(position, target, fingerprint) of each output to write.

    An existing output with the same fingerprint is up to date (recorded as
    skipped); one made from other data is replaced only with ``overwrite``,
    else an error before anything is written.
    """
    todo = []
    for pos in exp.positions:
        target = result.out_dir / f"{pos.name}{writer.suffix}"
        fingerprint = source_fingerprint(exp, pos, settings)
        status = "created"
        if writer.present(target):
            if writer.read_fingerprint(target) == fingerprint:
                result.skipped.append(target)
                result.entries.append(ExportEntry(pos.name, target, "skipped"))
                continue
            if not overwrite:
                raise InputError(
                    target,
                    "exists and was written from other source planes or settings; "
                    "use --overwrite to replace it",
                )
            status = "replaced"
        result.entries.append(ExportEntry(pos.name, target, status))
        todo.append((pos, target, fingerprint))
    return todo


def _write_positions(
    exp: Experiment,
    result: ExportResult,
    writer: ImageWriter,
    todo: list[tuple[Position, Path, str]],
    *,
    metadata: ExperimentMetadata | None,
    provenance: bool,
    workers: int,
    on_plane: Callable[[int], None] | None,
    engine: Engine | None = None,
    on_last: Callable[[], None] | None = None,
) -> None:
    """The one per-position loop, run with the folder locked: write each position
    of ``todo`` (:func:`outputs_to_write`) in order and record it.

    In this process (no ``engine``) the planes of every position to write are
    decoded by one pool, in order and a bounded number ahead, so the next
    position's first planes are ready when the writer finishes one, and
    ``on_last`` is called as the last position starts; with an ``engine`` each
    position is a task (:func:`write_position`) and ``on_plane`` is called once
    per position.
    """
    prov = provenance_pairs(exp) if provenance else None
    done = set()
    stream: Any = None
    try:
        if engine is None:
            stream = _decoded(exp, writer, [pos for pos, _, _ in todo], workers)

            def each(i: int, pos: Position, target: Path, fingerprint: str) -> int:
                if i == len(todo) - 1 and on_last is not None:
                    on_last()
                return _write_one(exp, pos, target, fingerprint, writer, metadata, prov,
                                  stream, on_plane)

            planes_written: Iterator[int] = (
                each(i, *item) for i, item in enumerate(todo))
        else:
            items = [(exp.for_task(pos), pos, target, fingerprint, writer, metadata, prov,
                      workers) for pos, target, fingerprint in todo]
            planes_written = engine.map_ordered(write_position, items,
                                                [f"export-{pos.name}" for pos, _, _ in todo])
        for (pos, target, _), planes in zip(todo, planes_written, strict=True):
            result.files.append(target)
            result.planes += planes
            result.nbytes += exp.position_nbytes(pos)
            done.add(pos.name)
            if engine is not None and on_plane:
                on_plane(exp.position_nbytes(pos))
    finally:
        if stream is not None:
            stream.close()
        # What was not written is not in the report.
        result.entries[:] = [e for e in result.entries
                             if e.status == "skipped" or e.position in done]


def _decoded(exp: Experiment, writer: ImageWriter, positions: list[Position],
             workers: int) -> Any:
    """Every plane of ``positions`` after the writer's per-plane work, in order."""
    work = {pos.name: writer.plane_work(pos) for pos in positions}

    def run(item: tuple[Position, int, Path | None]) -> Any:
        return work[item[0].name](item[1], item[2])

    jobs = ((pos, i, path) for pos in positions for i, path in enumerate(exp.plane_paths(pos)))
    plane_bytes = max((exp.position_nbytes(p) // exp.planes_per_position for p in positions),
                      default=1)
    return ordered_map(run, jobs, workers, prefetch_window(workers, plane_bytes),
                       batch=DECODE_BATCH)


def _write_one(exp: Experiment, position: Position, target: Path, fingerprint: str,
               writer: ImageWriter, metadata: ExperimentMetadata | None,
               provenance: list[tuple[str, str]] | None, planes: Iterator[Any],
               on_plane: Callable[[int], None] | None) -> int:
    """Describe one position and write it from the next of ``planes``; its plane count."""
    spec = describe(exp, position, metadata, provenance=provenance, fingerprint=fingerprint)
    writer.write(spec, itertools.islice(planes, spec.n_planes), target, on_plane)
    return spec.n_planes


def write_position(
    exp: Experiment,
    position: Position,
    target: Path,
    fingerprint: str,
    writer: ImageWriter,
    metadata: ExperimentMetadata | None,
    provenance: list[tuple[str, str]] | None,
    workers: int,
) -> int:
    """One position, start to end, as a task that may run more than once.

    An output already at ``target`` with ``fingerprint`` is an earlier attempt's,
    complete (outputs are renamed into place only when whole): nothing is done.
    Otherwise the position is decoded with ``workers`` threads and written,
    replacing what is there.  Returns the planes the position has.
    """
    if not exp.root.is_dir():
        raise InputError(exp.root, f"experiment folder not reachable from {socket.gethostname()}")
    if not target.parent.is_dir():
        raise InputError(target.parent,
                         f"output folder not reachable from {socket.gethostname()}")
    if writer.present(target) and writer.read_fingerprint(target) == fingerprint:
        return exp.planes_per_position
    stream = _decoded(exp, writer, [position], workers)
    try:
        return _write_one(exp, position, target, fingerprint, writer, metadata, provenance,
                          stream, None)
    finally:
        stream.close()
