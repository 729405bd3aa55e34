"""Write-behind: a streamed output does not stay in the page cache, and its bytes are intact."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

import numpy as np
import pytest

from pyomero_upload.export import writeback
from pyomero_upload.export.writeback import StreamedFile, StreamedFiles

linux_only = pytest.mark.skipif(not hasattr(os, "posix_fadvise") or sys.platform != "linux",
                                reason="page-cache residency is measured with mincore (Linux)")


def resident_pages(path) -> int:
    """Pages of ``path`` in the page cache (mincore on a read-only map)."""
    size = os.path.getsize(path)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value)
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        assert libc.mincore(addr, size, vec) == 0
        libc.munmap(addr, size)
        return sum(b & 1 for b in vec.raw)
    finally:
        os.close(fd)


def stream(path, chunks, window, sync=False):
    """Write ``chunks`` with write-behind; ``sync``: each chunk reaches the disk
    before the next step, so what is dropped does not depend on I/O timing."""
    with open(path, "wb") as fh:
        behind = StreamedFile(fh.fileno(), window)
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            if sync:
                os.fdatasync(fh.fileno())
            behind.advance(fh.tell())
        held = resident_pages(path) if sync else None
        behind.finish()
    return held


@linux_only
def test_streamed_file_keeps_little_in_the_cache_and_every_byte(tmp_path):
    rng = np.random.default_rng(1)
    chunks = [rng.integers(0, 2**16, 128 * 1024, dtype="<u2").tobytes() for _ in range(96)]
    kept, plain = tmp_path / "behind.raw", tmp_path / "plain.raw"
    window = 2 * 1024 * 1024
    held = stream(kept, chunks, window, sync=True)  # 24 MiB through 2 MiB windows
    with open(plain, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
        fh.flush()
        os.fdatasync(fh.fileno())
    total = os.path.getsize(kept) // mmap.PAGESIZE
    assert resident_pages(plain) == total  # without advice every page stays cached
    # while writing: the last window and the one being written, no more
    assert held <= 2 * window // mmap.PAGESIZE
    assert resident_pages(kept) == 0  # after finish(): everything written back is let go
    assert kept.read_bytes() == b"".join(chunks)


@linux_only
def test_streamed_files_let_go_of_older_files(tmp_path):
    files = []
    behind = StreamedFiles(window=1024 * 1024)
    for i in range(12):
        path = tmp_path / f"shard{i}"
        path.write_bytes(bytes([i]) * (512 * 1024))
        os.sync()  # written back: what is dropped does not depend on I/O timing
        files.append(path)
        behind.add(path, 512 * 1024)
    assert len(behind.pending) == 2  # dropped once 1 MiB of later files is added
    control = tmp_path / "control"
    control.write_bytes(b"c" * (512 * 1024))
    os.sync()
    assert resident_pages(control) == 512 * 1024 // mmap.PAGESIZE  # not ours: stays cached
    behind.finish()
    assert not behind.pending
    assert all(resident_pages(p) == 0 for p in files)
    assert [p.read_bytes()[:1] for p in files] == [bytes([i]) for i in range(12)]


def test_without_fadvise_nothing_happens(tmp_path, monkeypatch):
    monkeypatch.setattr(writeback, "_FADVISE", None)
    behind = StreamedFiles(window=10)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    behind.add(path, 100)
    assert not behind.pending  # no descriptors held where the advice cannot be given
    stream(tmp_path / "g", [b"y" * 50] * 4, window=10, sync=False)
    assert (tmp_path / "g").read_bytes() == b"y" * 200
