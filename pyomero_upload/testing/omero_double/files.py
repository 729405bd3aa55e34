"""The double's RawFileStore (file annotations' contents, table files)."""

from __future__ import annotations

import copy
import hashlib

import omero
import omero.api
import omero.model as M
from omero.rtypes import rlong, rstring

from ._base import Stateful, implements
from .model import shallow


@implements(omero.api.RawFileStore)
class RawFileStore(Stateful):
    """omero-server src/main/java/ome/services/RawFileBean.java: save sets size and
    hash and moves the row's update event; close saves a modified file."""

    fid: int | None = None
    modified = False

    def setFileId(self, fid, current):
        self.load("OriginalFile", fid)
        self.fid = fid
        self.db.files.setdefault(fid, bytearray())

    def _buf(self) -> bytearray:
        if self.fid is None:
            raise omero.ApiUsageException(message="setFileId has not been called")
        return self.db.files[self.fid]

    def getFileId(self, current):
        return self.fid

    def write(self, buf, position, length, current):
        data = self._buf()
        if len(data) < position:
            data.extend(bytes(position - len(data)))
        data[position:position + length] = buf[:length]
        self.modified = True

    def read(self, position, length, current):
        return bytes(self._buf()[position:position + length])

    def size(self, current):
        return len(self._buf())

    def exists(self, current):
        return self.fid is not None

    def truncate(self, length, current):
        data = self._buf()
        if length >= len(data):
            return False
        del data[length:]
        self.modified = True
        return True

    def save(self, current):
        if self.fid is None or not self.modified:
            return None
        self.modified = False
        data = self._buf()
        stored = self.db.get("OriginalFile", self.fid)
        row = copy.copy(stored)
        row.setSize(rlong(len(data)))
        row.setHash(rstring(hashlib.sha1(data).hexdigest()))
        row._details = copy.copy(stored.details)
        row._details.setUpdateEvent(M.EventI(self.db.new_event(), False))
        self.db.objects[("OriginalFile", self.fid)] = row
        return shallow(row)

    def close(self, current):
        self.save(current)
        Stateful.close(self, current)
