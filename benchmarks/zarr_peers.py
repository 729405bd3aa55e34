"""The other NGFF writers on the benchmark's experiment, one whole command per run.

    python benchmarks/zarr_peers.py {ome-zarr-py,ngff-zarr,bioio-ome-zarr} EXP OUT

Writes ``OUT/<position>.ome.zarr`` for every ``pos*`` folder of ``EXP``, one
position after another, as a user of that library would: each position is a
dask array of shape (T, C, Z, Y, X) with one chunk per plane, every chunk the
file read and decoded with ``imagecodecs.png_decode`` (what the decode limit
and our export do), handed to the library's writer with its default chunks,
compressor and scheduler (dask's threads, all cores).  Only what would make
the outputs different images is set: one resolution (ours writes no pyramid
for 512 x 512 planes; the libraries' defaults would add sub-resolutions) and
NGFF 0.5 on Zarr v3, which all three write.  None of them writes the OME-XML
or our annotations.  ``bench_zarr.py`` runs this as a child process and
measures it from outside.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLANE_RE = re.compile(r"^(?P<prefix>.+)_(?P<T>\d+)_(?P<C>[^_]+)_(?P<Z>\d+)\.png$")


def _decode(path: str) -> Any:
    from imagecodecs import png_decode

    with open(path, "rb") as f:
        return png_decode(f.read())


def position_array(folder: Path) -> Any:
    """The position's planes as a lazy (T, C, Z, Y, X) dask array, one chunk per plane."""
    import dask
    import dask.array as da
    import numpy as np

    planes: dict[tuple[int, str, int], Path] = {}
    for f in folder.iterdir():
        m = PLANE_RE.match(f.name)
        if m:
            planes[int(m["T"]), m["C"], int(m["Z"])] = f
    ts, cs, zs = (sorted({k[i] for k in planes}) for i in range(3))
    first = _decode(str(planes[ts[0], cs[0], zs[0]]))
    shape, dtype = first.shape, first.dtype
    decode = dask.delayed(_decode, pure=True)

    def plane(t: int, c: str, z: int) -> Any:
        return da.from_delayed(decode(str(planes[t, c, z])), shape, dtype=dtype)

    arr = da.stack([da.stack([da.stack([plane(t, c, z) for z in zs]) for c in cs]) for t in ts])
    assert arr.chunksize == (1, 1, 1, *shape), arr.chunksize
    assert arr.dtype == np.dtype(dtype)
    return arr


def write_ome_zarr_py(arr: Any, store: Path) -> None:
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image

    group = zarr.open_group(store, mode="w", zarr_format=3)
    write_image(arr, group, scale_factors=[], fmt=FormatV05(), axes="tczyx")


def write_ngff_zarr(arr: Any, store: Path) -> None:
    import ngff_zarr

    image = ngff_zarr.to_ngff_image(arr, dims=["t", "c", "z", "y", "x"])
    multiscales = ngff_zarr.to_multiscales(image, scale_factors=[])
    ngff_zarr.to_ngff_zarr(store, multiscales, version="0.5")


def write_bioio(arr: Any, store: Path) -> None:
    from bioio_ome_zarr.writers import OMEZarrWriter

    writer = OMEZarrWriter(store, arr.shape, arr.dtype, zarr_format=3)
    writer.write_full_volume(arr)


PEERS: dict[str, Callable[[Any, Path], None]] = {
    "ome-zarr-py": write_ome_zarr_py,
    "ngff-zarr": write_ngff_zarr,
    "bioio-ome-zarr": write_bioio,
}


def main(argv: list[str] | None = None) -> int:
    peer, exp, out = (argv if argv is not None else sys.argv[1:])
    write = PEERS[peer]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in sorted(Path(exp).glob("pos*")):
        write(position_array(folder), out_dir / f"{folder.name}.ome.zarr")
    return 0


if __name__ == "__main__":
    sys.exit(main())
