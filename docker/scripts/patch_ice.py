"""Make zeroc-ice 3.6.5's C++ sources build on Python 3.11+.

Two changes, both idempotent:

* ``src/Slice.cpp`` includes ``eval.h`` and ``compile.h``, which Python 3.11
  removed (their declarations are in ``Python.h``): drop the includes.
* ``src/Util.cpp`` reads ``PyThreadState->frame``, a field removed in 3.11:
  use the public ``PyThreadState_GetFrame()`` (3.9+), which returns a new
  reference, held by a ``PyObjectHandle`` so it is released.

Usage: python patch_ice.py SOURCE_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

OLD_FRAME = "    PyFrameObject *f = PyThreadState_GET()->frame;\n"
NEW_FRAME = """#if PY_VERSION_HEX >= 0x03090000
    PyObjectHandle frame(reinterpret_cast<PyObject*>(PyThreadState_GetFrame(PyThreadState_GET())));
    PyObject* f = frame.get();
#else
    PyFrameObject *f = PyThreadState_GET()->frame;
#endif
"""


def patch(src: Path) -> list[str]:
    done = []
    slice_cpp = src / "src" / "Slice.cpp"
    text = slice_cpp.read_text()
    fixed = "".join(
        line
        for line in text.splitlines(keepends=True)
        if line.strip() not in ("#include <eval.h>", "#include <compile.h>")
    )
    if fixed != text:
        slice_cpp.write_text(fixed)
        done.append("Slice.cpp: removed eval.h/compile.h includes")

    util_cpp = src / "src" / "Util.cpp"
    text = util_cpp.read_text()
    if OLD_FRAME in text and "PyThreadState_GetFrame" not in text:
        util_cpp.write_text(text.replace(OLD_FRAME, NEW_FRAME))
        done.append("Util.cpp: PyThreadState_GetFrame")
    elif "PyThreadState_GetFrame" not in text:
        raise SystemExit(f"{util_cpp}: expected code not found; is this zeroc-ice 3.6.5?")
    return done


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: patch_ice.py SOURCE_DIR")
    for change in patch(Path(sys.argv[1])) or ["already patched"]:
        print(f"patch_ice: {change}")
