#!/usr/bin/env bash
# Build a zeroc-ice 3.6.5 wheel for the given Python from PyPI's source, with
# our Python 3.11 fix (patch_ice.py), into a cache folder; reuse it if there.
# Needs a C++ compiler, the Python headers, libssl-dev and libbz2-dev.
#   build-ice-wheel.sh [OUT_DIR]     (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail

PYTHON=${PYTHON:-python3}
ICE_VERSION=${ICE_VERSION:-3.6.5}
OUT=${1:-.cache/wheels}
here=$(cd "$(dirname "$0")" && pwd)

tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')
mkdir -p "$OUT"
shopt -s nullglob
cached=("$OUT"/zeroc_ice-"$ICE_VERSION"-"$tag"-*.whl)
if (( ${#cached[@]} )); then
  echo "ice wheel: cached ${cached[0]}"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "zeroc-ice==$ICE_VERSION" -d "$work"
tar -xzf "$work/zeroc-ice-$ICE_VERSION.tar.gz" -C "$work"
"$PYTHON" "$here/patch_ice.py" "$work/zeroc-ice-$ICE_VERSION"
# Compile the extension on every core (setuptools builds serially by default).
printf "\n[build_ext]\nparallel = %s\n" "$(nproc)" >> "$work/zeroc-ice-$ICE_VERSION/setup.cfg"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$work/dist" "$work/zeroc-ice-$ICE_VERSION"
# Strip the debug information: IcePy's library goes from ~100 MB to ~15 MB.
if command -v strip >/dev/null; then
  "$PYTHON" -m pip install --quiet wheel
  "$PYTHON" -m wheel unpack -d "$work/unpacked" "$work"/dist/zeroc_ice-*.whl
  find "$work/unpacked" -name '*.so' -exec strip --strip-unneeded {} +
  rm "$work"/dist/zeroc_ice-*.whl
  "$PYTHON" -m wheel pack -d "$work/dist" "$work"/unpacked/zeroc_ice-*
fi
# Move in only a finished wheel, so an interrupted build leaves no cache entry.
mv "$work"/dist/zeroc_ice-*.whl "$OUT"/
echo "ice wheel: built $(ls "$OUT"/zeroc_ice-"$ICE_VERSION"-"$tag"-*.whl)"
