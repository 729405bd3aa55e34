"""The dataset folder an export writes into: made, checked, locked, cleaned, completed.

What every writer shares: :func:`prepare_out_dir` makes ``OUT/<dataset>`` (never
inside the input) and checks it is writable; :class:`FolderLock` keeps a second
export out of it; :func:`remove_stale_temporaries` removes what a killed export
left; :class:`MetadataFolder` builds ``metadata/`` beside the pixels and puts it
in place only when the export succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..layout import Experiment
    from ..model import ExperimentMetadata

#: Held (flock) while an export writes into a dataset folder; removed after.
LOCK_NAME = ".pyomero-upload.lock"
#: The temporaries this module makes in a dataset folder (mkstemp/mkdtemp put 8
#: characters of [a-z0-9_] where the X are): ".metadata.XXXXXXXX",
#: ".metadata-old.XXXXXXXX", ".write-test.XXXXXXXX".  Each writer adds its own
#: (:attr:`~pyomero_upload.export.frame.ImageWriter.temporaries`).
FOLDER_TEMPORARIES = (r"metadata(?:-old)?\.[a-z0-9_]{8}", r"write-test\.[a-z0-9_]{8}")

log = logging.getLogger(__name__)


def temporaries_pattern(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regular expression matching a hidden name ``.<p>`` for any of ``patterns``, whole."""
    return re.compile(r"^\.(?:" + "|".join(patterns) + r")$")


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def prepare_out_dir(exp: Experiment, out: Path, dataset: str) -> tuple[Path, list[Path]]:
    """Create ``out/dataset``; return it and the folders this call created.

    Raises:
        InputError: The folder is inside the experiment, cannot be made, is
            not a folder or is not writable (nothing is left behind).
    """
    root = exp.root.resolve()
    out_dir = (out / dataset).resolve()
    if _is_within(out_dir, root):
        raise InputError(
            out,
            f"output folder is inside the input folder {exp.root}; choose a folder "
            "outside it (the input is never modified)",
        )
    created: list[Path] = []
    missing = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    try:
        for p in reversed(missing):
            p.mkdir()
            created.append(p)
    except OSError as exc:
        remove_empty(created)
        raise InputError(out, f"cannot create output folder ({exc.strerror or exc})") from None
    if not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        remove_empty(created)
        problem = f"output folder is not writable ({exc.strerror or exc})"
        raise InputError(out_dir, problem) from None
    return out_dir, created


def current_umask() -> int:
    """The process's umask (outputs get ordinary permissions, not mkstemp's 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run created, deepest first, where they are empty."""
    for p in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            p.rmdir()


class FolderLock:
    """An exclusive lock on a dataset folder, so two exports never write into it at once.

    POSIX ``flock`` (``msvcrt.locking`` on Windows) on a hidden file that is
    removed on release.  After locking, the file is checked to be the one
    still at the path: a run that released and removed it meanwhile would
    otherwise leave us holding a lock on a deleted file.
    """

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
            try:
                _lock_fd(fd)
            except OSError:
                os.close(fd)
                raise InputError(
                    self.path.parent, "another export is writing into this folder; "
                    f"wait for it to finish (or remove {LOCK_NAME} if none is running)"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)
        raise InputError(self.path.parent, "cannot lock the folder (it keeps changing)")

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink()  # before the lock goes: a waiting run then sees a new file
        except FileNotFoundError:
            pass
        except PermissionError:  # Windows: an open file cannot be removed
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return
        os.close(fd)  # closing releases the lock


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(f.lstat().st_size for f in path.rglob("*") if not f.is_dir())
    return path.lstat().st_size


def remove_stale_temporaries(out_dir: Path, patterns: Iterable[str] = (),
                             folder: bool = True) -> list[Path]:
    """Remove what an export killed hard (SIGKILL, power loss) left in ``out_dir``.

    Call with the folder's :class:`FolderLock` held: then no other export is
    writing, and every file with one of our temporary names is an orphan.
    Only names matching ``patterns`` (the writers' own) and, with ``folder``,
    :data:`FOLDER_TEMPORARIES` are touched.  Returns what was removed; one log
    line names it with the space reclaimed.
    """
    ours = temporaries_pattern([*(FOLDER_TEMPORARIES if folder else ()), *patterns])
    stale = sorted(p for p in out_dir.iterdir() if ours.match(p.name))
    if not stale:
        return []
    nbytes = 0
    for p in stale:
        nbytes += _size(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    log.warning(
        "removed %d temporary file(s) an interrupted export left in %s, %.1f MB reclaimed: %s",
        len(stale), out_dir, nbytes / 1e6, ", ".join(p.name for p in stale),
    )
    return stale


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "table"


class MetadataFolder:
    """``out_dir/metadata/``: each table as HDF5 (PyTables) and CSV, the raw files copied.

    Built in a hidden temporary folder by a thread of its own (so that a
    coordinator builds it while Dask workers write the pixels; an export in
    one process starts it after its pixels), and put in place (replacing an
    older one) by :meth:`commit` only when the export has succeeded;
    :meth:`discard` removes it otherwise.  It is never seen half-written.
    """

    def __init__(self, metadata: ExperimentMetadata, out_dir: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.out_dir = out_dir
        self.tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".metadata."))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="metadata")
        self._built = self._pool.submit(self._build, metadata)

    def _build(self, metadata: ExperimentMetadata) -> None:
        self.tmp.chmod(0o777 & ~current_umask())
        for name, df in metadata.tables.items():
            stem = _safe_name(name)
            df.to_csv(self.tmp / f"{stem}.csv", index=False)
            df.to_hdf(self.tmp / f"{stem}.h5", key="table", format="table", mode="w",
                      index=False)
        for src in metadata.attachments:
            shutil.copyfile(src, self.tmp / src.name)  # contents only: no read-only bits

    def commit(self) -> Path:
        """Wait for the folder (its error, if any, is raised here) and rename it into place."""
        self._built.result()
        final = self.out_dir / "metadata"
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=self.out_dir, prefix=".metadata-old."))
            os.replace(final, old / "metadata")
            os.replace(self.tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, final)
        return final

    def discard(self) -> None:
        """Wait for the thread; remove the folder unless committed."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @classmethod
    def start(cls, metadata: ExperimentMetadata | None, out_dir: Path) -> MetadataFolder | None:
        """Start one where there is something to put in it."""
        if metadata is None or not (metadata.tables or metadata.attachments):
            return None
        return cls(metadata, out_dir)
