"""Every exception the package raises on purpose, all under :class:`PyOmeroUploadError`.

Each carries a one-line message for the user.  The exit codes they map to are
set in one place only, :data:`pyomero_upload.cli.EXIT_CODES`.
"""

from __future__ import annotations

from os import PathLike


class PyOmeroUploadError(Exception):
    """The root of the package's own errors: ``except PyOmeroUploadError`` catches them all."""


class InputError(PyOmeroUploadError):
    """The user's data (or output location) cannot be used as given.

    The message names the file or folder and the problem; the CLI prints it
    on one line and exits with status 1.
    """

    def __init__(self, path: str | PathLike[str] | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self) -> tuple[type, tuple[str | None, str]]:
        # Raised in a Dask worker, it arrives whole in the coordinator.
        return type(self), (self.path, self.problem)


class PluginError(InputError):
    """A user-supplied plug-in (metadata parser, image processor) failed.

    Reported as bad input naming the plug-in, never as a server error.
    """


class UsageError(PyOmeroUploadError):
    """Command-line arguments that parse but cannot work together."""


class OmeroError(PyOmeroUploadError):
    """A failure talking to OMERO (exit 7 unless a subclass says otherwise)."""


class OmeroMissingError(OmeroError):
    """The OMERO Python libraries (omero-py, zeroc-ice) are not installed."""


class LoginRefusedError(OmeroError):
    """Wrong user name or password, an expired session key or an unknown group."""


class UnknownHostError(OmeroError):
    """The server's host name does not resolve."""


class ConnectionRefusedError_(OmeroError):  # noqa: N801 - the builtin's name is taken
    """Nothing listens on the server's port, or the connection cannot be made."""


class OmeroTimeoutError(OmeroError):
    """The server did not answer in time (including a login that timed out)."""


class DatasetBusyError(OmeroError):
    """Another run is writing into the dataset (its claim is live); the message names it."""


class ConnectionLostError(OmeroError):
    """The connection dropped and could not be re-established."""


__all__ = [
    "ConnectionLostError", "ConnectionRefusedError_", "DatasetBusyError", "InputError",
    "LoginRefusedError", "OmeroError", "OmeroMissingError", "OmeroTimeoutError", "PluginError",
    "PyOmeroUploadError", "UnknownHostError", "UsageError",
]
