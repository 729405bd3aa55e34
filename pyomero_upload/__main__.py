"""``python -m pyomero_upload`` runs the command-line interface."""

from .cli import run

run()
