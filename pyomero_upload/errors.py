"""Exceptions that the command line turns into one-line messages."""

from __future__ import annotations

from os import PathLike


class InputError(Exception):
    """The user's data (or output location) cannot be used as given.

    The message names the file or folder and the problem; the CLI prints it
    on one line and exits with status 1.
    """

    def __init__(self, path: str | PathLike[str] | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
