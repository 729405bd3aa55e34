"""pyomero-upload: time-lapse microscopy experiments to annotated 5-D images.

The package turns a folder of single-plane image files (one sub-folder per
stage position) into one X, Y, Z, C, T hypercube per position, written as
OME-TIFF or uploaded to OMERO.  Only the package :mod:`pyomero_upload.omero`
imports the OMERO libraries; everything else works without them.
"""

__version__ = "0.1.0"

TOOL_NAME = "pyomero-upload"
TOOL_URL = "https://pypi.org/project/pyomero-upload/"
# The toolkit this project rebuilds; cited in every upload's provenance.
CITATION = (
    "Hay J, Troup E, Clark I, Pietsch J, Zielinski T, Millar A. PyOmeroUpload: "
    "A Python toolkit for uploading images and metadata to OMERO. "
    "Wellcome Open Research 2020, 5:96 (PMC7388197)"
)

__all__ = ["__version__", "TOOL_NAME", "TOOL_URL", "CITATION"]
