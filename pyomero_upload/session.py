"""Moved to :mod:`pyomero_upload.experiment`; this name is kept for one release."""
from .experiment import *  # noqa: F403
from .experiment import open_experiment  # noqa: F401
