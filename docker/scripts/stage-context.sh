#!/usr/bin/env bash
# Put what an image's build needs from the repository into IMAGE/.build/
# (the image folder is the build context; .build/ is not committed).
#   stage-context.sh IMAGE ICE_WHEEL_DIR    (PYTHON_VERSION=3.11: which cached
#                                            zeroc-ice wheel omero_base gets, cp311)
set -euo pipefail
image=$1
wheels=${2:-}
python_version=${PYTHON_VERSION:-3.11}
tag="cp${python_version//./}"  # 3.11 -> cp311
top=$(cd "$(dirname "$0")/../.." && pwd)
stage="$top/$image/.build"
rm -rf "$stage"
mkdir -p "$stage"
case "$image" in
  omero_base)
    mkdir -p "$stage/wheels"
    cp "$top/docker/scripts/build-ice-wheel.sh" "$top/docker/scripts/patch_ice.py" "$stage/"
    if [ -n "$wheels" ] && compgen -G "$wheels/zeroc_ice-3.6.5-$tag-*.whl" >/dev/null; then
      cp "$wheels"/zeroc_ice-3.6.5-"$tag"-*.whl "$stage/wheels/"
    fi
    ;;
  omero_uploader)
    cp "$top/pyproject.toml" "$top/README.md" "$stage/"
    cp -r "$top/pyomero_upload" "$stage/"
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +
    ;;
  omero_jupyter)
    mkdir -p "$stage/notebooks"
    cp "$top"/notebooks/*.ipynb "$top/notebooks/README.md" "$stage/notebooks/"
    ;;
  omero_ide)
    cp -r "$top/docker/plugin-template" "$stage/"
    ;;
esac
