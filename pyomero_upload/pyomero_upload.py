"""The original toolkit's Python API: ``PyOmeroUploader(...).launch_upload(...)``.

    from pyomero_upload.pyomero_upload import PyOmeroUploader
    uploader = PyOmeroUploader("alice", password, "omero.example.org")
    dataset_id = uploader.launch_upload("run-42", "/data/run-42", hypercube=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .experiment import open_experiment


class PyOmeroUploader:
    """Upload experiment folders to one OMERO server as one user."""

    def __init__(self, user: str, password: str, server: str, port: int = 4064,
                 group: str | None = None, secure: bool = True):
        self._settings: dict[str, Any] = dict(host=server, port=int(port), user=user,
                                              password=password, group=group, secure=secure)

    def __repr__(self) -> str:  # never show the password
        s = self._settings
        return f"PyOmeroUploader(user={s['user']!r}, server={s['host']!r}, port={s['port']})"

    def launch_upload(
        self,
        dataset_name: str,
        data_path: str | Path,
        hypercube: bool = True,
        parser_class: type | None = None,
        image_processor_impl: type | Any | None = None,
        include_provenance_kvps: bool = True,
        ignore_metadata: bool = False,
        project: str | None = None,
        workers: int | None = None,
        client_factory: Any = None,
    ) -> int:
        """Upload ``data_path`` into dataset ``dataset_name``; return the dataset id.

        One login for the whole upload, always closed.

        Args:
            dataset_name: The target dataset (found, else created).
            data_path: The experiment folder.
            hypercube: One 5-D image per position (else one image per plane file).
            parser_class: A metadata parser class (``extract_metadata(path)``).
            image_processor_impl: An :class:`~pyomero_upload.plugins.ImageProcessor`
                class or instance.
            include_provenance_kvps: Add the provenance key-value pairs.
            ignore_metadata: Read no metadata.
            project: The project's name (default: the metadata's).
            workers: CPU cores to use (default: all).
            client_factory: Makes the ``omero.client`` (tests).

        Returns:
            The dataset's id.

        Raises:
            pyomero_upload.errors.OmeroError: The server or connection failed.
            pyomero_upload.errors.InputError: The data or a plug-in failed.
        """
        from .omero.connection import Connection, ConnectionSettings
        from .plugins.base import UploadOptions
        from .upload import DefaultImageProcessor, upload_experiment

        exp, metadata = open_experiment(data_path, parser=parser_class,
                                        ignore_metadata=ignore_metadata)
        processor = image_processor_impl or DefaultImageProcessor
        if isinstance(processor, type):
            processor = processor()
        options = UploadOptions(dataset=dataset_name, project=project, hypercube=hypercube,
                                workers=workers, provenance=include_provenance_kvps)
        settings = ConnectionSettings(**self._settings)
        with Connection.open(settings, client_factory) as conn:
            result = upload_experiment(conn, exp, metadata, options, processor)
        if result.dataset_id is None:  # only a dry run leaves it unset, and this is none
            raise RuntimeError("upload finished without a dataset")
        return int(result.dataset_id)
