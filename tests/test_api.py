"""The package's face: one flat, lazily imported Python API and one root error class."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pyomero_upload as pu
from pyomero_upload import errors


def test_every_public_name_resolves_to_its_home():
    from pyomero_upload.experiment import open_experiment
    from pyomero_upload.export import export_ome_tiff, export_ome_zarr
    from pyomero_upload.omero.connection import connect
    from pyomero_upload.plugins.base import UploadOptions
    from pyomero_upload.upload import upload_experiment

    assert pu.open_experiment is open_experiment
    assert pu.export_ome_tiff is export_ome_tiff and pu.export_ome_zarr is export_ome_zarr
    assert pu.connect is connect and pu.upload_experiment is upload_experiment
    assert pu.UploadOptions is UploadOptions
    assert set(pu.__all__) == {"CITATION", "TOOL_NAME", "TOOL_URL", "__version__",
                               *pu._LAZY}
    for name in pu.__all__:
        assert getattr(pu, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pu.nothing  # noqa: B018


def test_import_and_help_load_neither_numpy_nor_pandas():
    code = ("import sys, pyomero_upload\n"
            "from pyomero_upload.cli import main\n"
            "assert main(['--help']) == 0\n"
            "assert main(['export', '--help']) == 0\n"
            "heavy = sorted({'numpy', 'pandas', 'omero'} & set(sys.modules))\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "HEAVY []"


def test_one_root_for_every_error_the_package_raises():
    ours = [getattr(errors, n) for n in errors.__all__]
    assert all(issubclass(cls, pu.PyOmeroUploadError) for cls in ours)
    assert not issubclass(pu.PyOmeroUploadError, (ValueError, OSError))


def test_old_module_names_still_import():
    """ometiff, ome_zarr and session are kept one release for notebooks and scripts."""
    from pyomero_upload import experiment, export
    from pyomero_upload.export import ome_zarr_writer, pyramid
    from pyomero_upload.ome_zarr import StoreFormat, export_ome_zarr
    from pyomero_upload.ometiff import FolderLock, downsample, export_ome_tiff
    from pyomero_upload.session import open_experiment

    assert export_ome_tiff is export.export_ome_tiff and downsample is pyramid.downsample
    assert FolderLock is export.folder.FolderLock
    assert export_ome_zarr is export.export_ome_zarr
    assert StoreFormat is ome_zarr_writer.StoreFormat
    assert open_experiment is experiment.open_experiment


def test_plugin_contract_types_live_with_the_contract():
    from pyomero_upload import upload
    from pyomero_upload.plugins import base

    for name in ("DatasetRef", "UploadOptions", "UploadResult", "ImageProcessor"):
        assert getattr(upload, name) is getattr(base, name)
        assert getattr(upload, name).__module__ == "pyomero_upload.plugins.base"
